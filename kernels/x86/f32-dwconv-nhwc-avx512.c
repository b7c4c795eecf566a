/* f32-dwconv-nhwc, AVX-512 (F + BW + DQ + VL, FMA).
 * Contract (im2row_kernels.h):
 *   out[p*out_stride + ch] = w[ch] + sum_{t<ks} a[p*ks + t][ch] * w[(1 + t)*channels + ch]
 * Vectorised across channels: blocks of 64 channels (4 accumulators) for two pixels at once,
 * so each weight vector loaded serves both (1.5 loads per FMA instead of 2: the kernel is
 * bound by loads from L1/L2), then 16-channel vectors, then one masked vector for the tail.
 * Masked-off lanes are never accessed. */
#if defined(__x86_64__) || defined(_M_X64)
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"
#include "igemm-nhwc-common.h"

/* P pixels x V vectors of 16 channels starting at channel ch, the last one under `mask`. */
IGEMM_INLINE void block(ptrdiff_t ch, ptrdiff_t channels, ptrdiff_t ks, const float *const *restrict a,
                        const float *restrict w, float *restrict out, ptrdiff_t out_stride,
                        __mmask16 mask, const int P, const int V)
{
    __m512 acc[2][4];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) {
        const __m512 b = _mm512_maskz_loadu_ps(v == V - 1 ? mask : 0xFFFF, w + ch + 16 * v);
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) acc[p][v] = b;
    }
    for (ptrdiff_t t = 0; t < ks; t++) {
        const float *wt = w + (1 + t) * channels + ch;
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
            const __mmask16 mv = v == V - 1 ? mask : 0xFFFF;
            const __m512 wv = _mm512_maskz_loadu_ps(mv, wt + 16 * v);
#pragma GCC unroll 2
            for (int p = 0; p < P; p++)
                acc[p][v] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mv, a[p * ks + t] + ch + 16 * v), wv,
                                            acc[p][v]);
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
            _mm512_mask_storeu_ps(out + p * out_stride + ch + 16 * v, v == V - 1 ? mask : 0xFFFF, acc[p][v]);
}

IGEMM_INLINE void pixels(ptrdiff_t channels, ptrdiff_t ks, const float *const *a, const float *w, float *out,
                         ptrdiff_t out_stride, const int P)
{
    ptrdiff_t ch = 0;
    for (; ch + 64 <= channels; ch += 64) block(ch, channels, ks, a, w, out, out_stride, 0xFFFF, P, 4);
    for (; ch + 16 <= channels; ch += 16) block(ch, channels, ks, a, w, out, out_stride, 0xFFFF, P, 1);
    if (ch < channels)
        block(ch, channels, ks, a, w, out, out_stride, (__mmask16)((1u << (channels - ch)) - 1u), P, 1);
}

void im2row_dwconv_nhwc__avx512(ptrdiff_t m, ptrdiff_t channels, ptrdiff_t ks, const float *const *a,
                                const float *w, float *out, ptrdiff_t out_stride)
{
    dwconv_nhwc_check_args(m, channels, ks, a, w, out, out_stride);
    ptrdiff_t p = 0;
    for (; p + 2 <= m; p += 2) pixels(channels, ks, a + p * ks, w, out + p * out_stride, out_stride, 2);
    if (p < m) pixels(channels, ks, a + p * ks, w, out + p * out_stride, out_stride, 1);
}
#endif
