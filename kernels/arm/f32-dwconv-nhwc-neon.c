/* f32-dwconv-nhwc, AArch64 ASIMD + FMA.
 * Contract (im2row_kernels.h):
 *   out[p*out_stride + ch] = w[ch] + sum_{t<ks} a[p*ks + t][ch] * w[(1 + t)*channels + ch]
 * Vectorised across channels: blocks of 16 channels (4 accumulators) for two pixels at once,
 * so each weight vector loaded serves both, then 4-channel vectors, then a scalar tail (no
 * read or write past `channels`). */
#if defined(__aarch64__)
#include <math.h>
#include <stddef.h>
#include <arm_neon.h>

#include "im2row_kernels.h"
#include "igemm-nhwc-common.h"

/* P pixels x V vectors of 4 channels starting at channel ch. */
IGEMM_INLINE void block(ptrdiff_t ch, ptrdiff_t channels, ptrdiff_t ks, const float *const *restrict a,
                        const float *restrict w, float *restrict out, ptrdiff_t out_stride, const int P,
                        const int V)
{
    float32x4_t acc[2][4];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) {
        const float32x4_t b = vld1q_f32(w + ch + 4 * v);
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) acc[p][v] = b;
    }
    for (ptrdiff_t t = 0; t < ks; t++) {
        const float *wt = w + (1 + t) * channels + ch;
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
            const float32x4_t wv = vld1q_f32(wt + 4 * v);
#pragma GCC unroll 2
            for (int p = 0; p < P; p++)
                acc[p][v] = vfmaq_f32(acc[p][v], vld1q_f32(a[p * ks + t] + ch + 4 * v), wv);
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) vst1q_f32(out + p * out_stride + ch + 4 * v, acc[p][v]);
}

IGEMM_INLINE void pixels(ptrdiff_t channels, ptrdiff_t ks, const float *const *a, const float *w, float *out,
                         ptrdiff_t out_stride, const int P)
{
    ptrdiff_t ch = 0;
    for (; ch + 16 <= channels; ch += 16) block(ch, channels, ks, a, w, out, out_stride, P, 4);
    for (; ch + 4 <= channels; ch += 4) block(ch, channels, ks, a, w, out, out_stride, P, 1);
    for (; ch < channels; ch++)
        for (int p = 0; p < P; p++) {
            float acc = w[ch];
            for (ptrdiff_t t = 0; t < ks; t++) acc = fmaf(a[p * ks + t][ch], w[(1 + t) * channels + ch], acc);
            out[p * out_stride + ch] = acc;
        }
}

void im2row_dwconv_nhwc__neon(ptrdiff_t m, ptrdiff_t channels, ptrdiff_t ks, const float *const *a,
                              const float *w, float *out, ptrdiff_t out_stride)
{
    dwconv_nhwc_check_args(m, channels, ks, a, w, out, out_stride);
    ptrdiff_t p = 0;
    for (; p + 2 <= m; p += 2) pixels(channels, ks, a + p * ks, w, out + p * out_stride, out_stride, 2);
    if (p < m) pixels(channels, ks, a + p * ks, w, out + p * out_stride, out_stride, 1);
}
#endif
