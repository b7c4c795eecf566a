/* f32-dwconv-nhwc, AVX2 + FMA.
 * Contract (im2row_kernels.h):
 *   out[p*out_stride + ch] = w[ch] + sum_{t<ks} a[p*ks + t][ch] * w[(1 + t)*channels + ch]
 * Vectorised across channels: blocks of 32 channels (4 accumulators) for two pixels at once,
 * so each weight vector loaded serves both, then 8-channel vectors, then one masked vector
 * (maskload/maskstore: masked-off lanes are never accessed). */
#if defined(__x86_64__) || defined(_M_X64)
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"
#include "igemm-nhwc-common.h"

IGEMM_INLINE __m256 load(const float *p, __m256i mask, const int MASKED)
{
    return MASKED ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
}

/* P pixels x V vectors of 8 channels starting at channel ch; MASKED: one vector under mask. */
IGEMM_INLINE void block(ptrdiff_t ch, ptrdiff_t channels, ptrdiff_t ks, const float *const *restrict a,
                        const float *restrict w, float *restrict out, ptrdiff_t out_stride,
                        __m256i mask, const int P, const int V, const int MASKED)
{
    __m256 acc[2][4];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) {
        const __m256 b = load(w + ch + 8 * v, mask, MASKED);
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) acc[p][v] = b;
    }
    for (ptrdiff_t t = 0; t < ks; t++) {
        const float *wt = w + (1 + t) * channels + ch;
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
            const __m256 wv = load(wt + 8 * v, mask, MASKED);
#pragma GCC unroll 2
            for (int p = 0; p < P; p++)
                acc[p][v] = _mm256_fmadd_ps(load(a[p * ks + t] + ch + 8 * v, mask, MASKED), wv, acc[p][v]);
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
            if (MASKED) _mm256_maskstore_ps(out + p * out_stride + ch + 8 * v, mask, acc[p][v]);
            else _mm256_storeu_ps(out + p * out_stride + ch + 8 * v, acc[p][v]);
        }
}

IGEMM_INLINE void pixels(ptrdiff_t channels, ptrdiff_t ks, const float *const *a, const float *w, float *out,
                         ptrdiff_t out_stride, const int P)
{
    const __m256i all = _mm256_set1_epi32(-1);
    ptrdiff_t ch = 0;
    for (; ch + 32 <= channels; ch += 32) block(ch, channels, ks, a, w, out, out_stride, all, P, 4, 0);
    for (; ch + 8 <= channels; ch += 8) block(ch, channels, ks, a, w, out, out_stride, all, P, 1, 0);
    if (ch < channels) {
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(channels - ch)),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        block(ch, channels, ks, a, w, out, out_stride, mask, P, 1, 1);
    }
}

void im2row_dwconv_nhwc__avx2(ptrdiff_t m, ptrdiff_t channels, ptrdiff_t ks, const float *const *a,
                              const float *w, float *out, ptrdiff_t out_stride)
{
    dwconv_nhwc_check_args(m, channels, ks, a, w, out, out_stride);
    ptrdiff_t p = 0;
    for (; p + 2 <= m; p += 2) pixels(channels, ks, a + p * ks, w, out + p * out_stride, out_stride, 2);
    if (p < m) pixels(channels, ks, a + p * ks, w, out + p * out_stride, out_stride, 1);
}
#endif
