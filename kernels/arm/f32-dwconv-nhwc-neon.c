/* f32-dwconv-nhwc, AArch64 ASIMD + FMA.
 * Contract (im2row_kernels.h):
 *   out[p*out_stride + ch] = w[ch] + sum_{t<ks} in(p, t)[ch] * w[(1 + t)*channels + ch],
 *   in(p, t) = a[p*a_stride + t] + p*a_step
 * Vectorised across channels.  3x3 (ks = 9): per 8 channels the 9 x 2 weight vectors stay in
 * registers while the block runs over every pixel, so each FMA needs one load.  Other ks:
 * blocks of 16 channels (4 accumulators) for two pixels at once, each weight vector loaded
 * serving both.  Then 4-channel vectors, then a scalar tail (no read or write past
 * `channels`).  NULL taps are skipped (the 3x3 path needs all nine). */
#if defined(__aarch64__)
#include <math.h>
#include <stddef.h>
#include <arm_neon.h>

#include "im2row_kernels.h"
#include "igemm-nhwc-common.h"

/* P pixels x V vectors of 4 channels starting at channel ch; pixel p reads
 * a[p*a_stride + t] + off0 + p*a_step. */
IGEMM_INLINE void block(ptrdiff_t ch, ptrdiff_t channels, ptrdiff_t ks, const float *const *restrict a,
                        ptrdiff_t a_stride, ptrdiff_t a_step, ptrdiff_t off0, const float *restrict w,
                        float *restrict out, ptrdiff_t out_stride, const int P, const int V)
{
    float32x4_t acc[2][4];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) {
        const float32x4_t b = vld1q_f32(w + ch + 4 * v);
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) acc[p][v] = b;
    }
    for (ptrdiff_t t = 0; t < ks; t++) {
        if (a[t] == NULL) continue;     /* a padding tap */
        const float *wt = w + (1 + t) * channels + ch;
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
            const float32x4_t wv = vld1q_f32(wt + 4 * v);
#pragma GCC unroll 2
            for (int p = 0; p < P; p++)
                acc[p][v] = vfmaq_f32(acc[p][v], vld1q_f32(a[p * a_stride + t] + off0 + p * a_step + ch + 4 * v), wv);
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) vst1q_f32(out + p * out_stride + ch + 4 * v, acc[p][v]);
}

/* The channels past the last whole vector, one at a time. */
static void channel_tail(ptrdiff_t ch, ptrdiff_t m, ptrdiff_t channels, ptrdiff_t ks, const float *const *a,
                         ptrdiff_t a_stride, ptrdiff_t a_step, const float *w, float *out, ptrdiff_t out_stride)
{
    for (ptrdiff_t p = 0; p < m; p++)
        for (ptrdiff_t c = ch; c < channels; c++) {
            float acc = w[c];
            for (ptrdiff_t t = 0; t < ks; t++)
                if (a[p * a_stride + t] != NULL)
                    acc = fmaf(a[p * a_stride + t][p * a_step + c], w[(1 + t) * channels + c], acc);
            out[p * out_stride + c] = acc;
        }
}

/* ks = 9: channels [ch, ch + 4*V) of m pixels (pixel p at a[p*a_stride + t] + off0 +
 * p*a_step), the weights held in registers. */
enum { TAPS9_PIXELS = 16 };
IGEMM_INLINE void taps9_block(ptrdiff_t m, ptrdiff_t ch, ptrdiff_t channels, const float *const *restrict a,
                              ptrdiff_t a_stride, ptrdiff_t a_step, ptrdiff_t off0, const float *restrict w,
                              float *restrict out, ptrdiff_t out_stride, const int V)
{
    float32x4_t wv[9][2], bias[2];
#pragma GCC unroll 2
    for (int v = 0; v < V; v++) {
        bias[v] = vld1q_f32(w + ch + 4 * v);
#pragma GCC unroll 9
        for (int t = 0; t < 9; t++) wv[t][v] = vld1q_f32(w + (1 + t) * channels + ch + 4 * v);
    }
    for (ptrdiff_t p = 0; p < m; p++, a += a_stride, out += out_stride) {
        const ptrdiff_t off = off0 + p * a_step + ch;
#pragma GCC unroll 2
        for (int v = 0; v < V; v++) {
            float32x4_t acc = bias[v];
#pragma GCC unroll 9
            for (int t = 0; t < 9; t++) acc = vfmaq_f32(acc, vld1q_f32(a[t] + off + 4 * v), wv[t][v]);
            vst1q_f32(out + ch + 4 * v, acc);
        }
    }
}

void im2row_dwconv_nhwc__neon(ptrdiff_t m, ptrdiff_t channels, ptrdiff_t ks, const float *const *a,
                              ptrdiff_t a_stride, ptrdiff_t a_step, const float *w, float *out,
                              ptrdiff_t out_stride)
{
    dwconv_nhwc_check_args(m, channels, ks, a, a_stride, a_step, w, out, out_stride);
    ptrdiff_t ch = 0;
    if (ks == 9 && dwconv_nhwc_all_taps(a, ks)) {
        /* chunks of pixels through every channel block, so the input is read in whole pixels */
        for (ptrdiff_t p0 = 0; p0 < m; p0 += TAPS9_PIXELS) {
            const ptrdiff_t mc = m - p0 < TAPS9_PIXELS ? m - p0 : TAPS9_PIXELS;
            const float *const *ap = a + p0 * a_stride;
            float *op = out + p0 * out_stride;
            for (ch = 0; ch + 8 <= channels; ch += 8)
                taps9_block(mc, ch, channels, ap, a_stride, a_step, p0 * a_step, w, op, out_stride, 2);
            for (; ch + 4 <= channels; ch += 4)
                taps9_block(mc, ch, channels, ap, a_stride, a_step, p0 * a_step, w, op, out_stride, 1);
        }
        ch = channels - channels % 4;
    } else {
        const ptrdiff_t whole = channels - channels % 4;
        ptrdiff_t p = 0;
        for (; p < m; p += 2) {
            const int P = m - p >= 2 ? 2 : 1;
            const float *const *ap = a + p * a_stride;
            float *op = out + p * out_stride;
            for (ch = 0; ch + 16 <= whole; ch += 16) {
                if (P == 2) block(ch, channels, ks, ap, a_stride, a_step, p * a_step, w, op, out_stride, 2, 4);
                else block(ch, channels, ks, ap, a_stride, a_step, p * a_step, w, op, out_stride, 1, 4);
            }
            for (; ch < whole; ch += 4) {
                if (P == 2) block(ch, channels, ks, ap, a_stride, a_step, p * a_step, w, op, out_stride, 2, 1);
                else block(ch, channels, ks, ap, a_stride, a_step, p * a_step, w, op, out_stride, 1, 1);
            }
        }
        ch = whole;
    }
    if (ch < channels) channel_tail(ch, m, channels, ks, a, a_stride, a_step, w, out, out_stride);
}
#endif
