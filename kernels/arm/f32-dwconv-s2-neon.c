/* f32-dwconv-s2, AArch64 ASIMD variant.
 * Contract (im2row_kernels.h): stride-2 depthwise on the unpadded plane,
 *   out[y][x] = bias + sum_{i<kh, j<kw} w[i*kw+j] * in(2y - pad_top + i, 2x - pad_left + j),
 * taps outside the plane reading zero.
 *
 * Vectorised along output width (4 columns), blocks of R output rows sharing each input row.
 * For 4 outputs from column x0, taps j and j + 1 (j even) of one input row are the two halves
 * of one de-interleaving load (ld2) of the 8 floats from base + j (base = 2*x0 - pad_left): the
 * stride-2 phase split costs nothing beyond the loads.  Blocks whose loads would cross the
 * plane's edge load from a zero-padded copy of that piece of the row; rows outside the plane
 * are skipped.  Taps accumulate in (i, j) order, as the scalar oracle's. */
#if defined(__aarch64__)
#include <arm_neon.h>

#include "im2row_kernels.h"
#include "dwconv-common.h"

#define AI static inline __attribute__((always_inline))
#define SPAN (IM2ROW_DWCONV_S2_MAX_KW + 7)   /* floats the tap pairs of 4 outputs read */

AI void block(float *out, ptrdiff_t os, ptrdiff_t y0, ptrdiff_t x0, const float *plane, ptrdiff_t height,
              ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left, const float *w, float bias,
              ptrdiff_t ocols, const int KH, const int KW, const int R)
{
    const int NR = 2 * (R - 1) + KH, PAIRS = (KW + 1) / 2;
    const ptrdiff_t base = 2 * x0 - pad_left, reach = 2 * PAIRS + 6;
    const int inside = base >= 0 && base + reach <= width;
    float32x4_t acc[4];
    for (int t = 0; t < R; t++)
        acc[t] = vdupq_n_f32(bias);
    for (int ir = 0; ir < NR; ir++) {
        const ptrdiff_t r = 2 * y0 - pad_top + ir;
        if (r < 0 || r >= height)
            continue;
        const float *row = plane + r * width;
        float edge[SPAN + 1];
        const float *src = row + base;
        if (!inside) {
            for (ptrdiff_t q = 0; q < reach; q++) {
                const ptrdiff_t c = base + q;
                edge[q] = c >= 0 && c < width ? row[c] : 0.0f;
            }
            src = edge;
        }
        for (int p = 0; p < PAIRS; p++) {
            const float32x4x2_t v = vld2q_f32(src + 2 * p);
            for (int odd = 0; odd < 2; odd++) {
                const int j = 2 * p + odd;
                if (j >= KW)
                    break;
                for (int t = 0; t < R; t++) {
                    const int i = ir - 2 * t;
                    if (i >= 0 && i < KH)
                        acc[t] = vfmaq_n_f32(acc[t], v.val[odd], w[i * KW + j]);
                }
            }
        }
    }
    for (int t = 0; t < R; t++) {
        float *o = out + (y0 + t) * os + x0;
        if (ocols >= 4) {
            vst1q_f32(o, acc[t]);
        } else {
            float lanes[4];
            vst1q_f32(lanes, acc[t]);
            for (ptrdiff_t q = 0; q < ocols; q++)
                o[q] = lanes[q];
        }
    }
}

AI void conv(float *out, ptrdiff_t os, ptrdiff_t oh, ptrdiff_t ow, const float *plane, ptrdiff_t height,
             ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left, const float *w, float bias, const int KH,
             const int KW)
{
    ptrdiff_t y = 0;
    for (; y < oh; y += 4) {
        const int R = oh - y >= 4 ? 4 : (int)(oh - y);
        for (ptrdiff_t x0 = 0; x0 < ow; x0 += 4) {
            switch (R) {
            case 4: block(out, os, y, x0, plane, height, width, pad_top, pad_left, w, bias, ow - x0, KH, KW, 4); break;
            case 3: block(out, os, y, x0, plane, height, width, pad_top, pad_left, w, bias, ow - x0, KH, KW, 3); break;
            case 2: block(out, os, y, x0, plane, height, width, pad_top, pad_left, w, bias, ow - x0, KH, KW, 2); break;
            default: block(out, os, y, x0, plane, height, width, pad_top, pad_left, w, bias, ow - x0, KH, KW, 1); break;
            }
        }
    }
}

DWCONV_S2_ENTRY(im2row_dwconv_s2__neon)
#endif
