/* f32-dwconv, NEON (aarch64 ASIMD + FMA) variant.
 * Contract (im2row_kernels.h): out[y][x] = bias + sum_{i,j} w[i*kw+j] *
 * xpad[y*sh + i*dh][x*sw + j*dw], with the padded plane given as sw column phases, so tap
 * column j reads a contiguous run starting at column x + (j*dw)/sw of phase (j*dw)%sw.
 * `out` must not overlap `phases` (the width tail recomputes a few columns).
 *
 * Vectorised along output width: blocks of R = 4 output rows by 8 columns (two q vectors),
 * then single 4-column vectors, the last one moved back to end at ow; planes narrower than
 * 4 columns are done in scalar code.  3x3, 5x5 and 7x7 at stride 1/2 without row dilation get
 * compile-time blocks in which each input vector is loaded once and feeds every output row
 * that uses it; other shapes run the taps in a runtime loop.  Taps accumulate in (i, j)
 * order, like the scalar oracle. */
#if defined(__aarch64__)
#include <arm_neon.h>

#include "im2row_kernels.h"
#include "dwconv-common.h"

#define AI static inline __attribute__((always_inline))
#define DW_R 4

/* R rows x NV vectors.  in[j]: tap column j's input for the block's first row and column. */
AI void block_fixed(float *o, ptrdiff_t os, const float *const *in, ptrdiff_t pw,
                    const float32x4_t *wv, float32x4_t vb, const int KH, const int KW,
                    const int SH, const int R, const int NV)
{
    float32x4_t acc[DW_R][2];
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            acc[t][v] = vb;
    const int NR = (R - 1) * SH + KH;
#pragma GCC unroll 64
    for (int ir = 0; ir < NR; ir++) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++) {
            float32x4_t x[2];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++)
                x[v] = vld1q_f32(in[j] + ir * pw + 4 * v);
#pragma GCC unroll 8
            for (int t = 0; t < R; t++) {
                const int i = ir - t * SH;
                if (i >= 0 && i < KH)
#pragma GCC unroll 2
                    for (int v = 0; v < NV; v++)
                        acc[t][v] = vfmaq_f32(acc[t][v], wv[i * KW + j], x[v]);
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            vst1q_f32(o + t * os + 4 * v, acc[t][v]);
}

/* Scalar columns [x0, ow) of rows y .. y+R-1 (planes narrower than one vector). */
static void cols_scalar(float *out, ptrdiff_t os, ptrdiff_t y, ptrdiff_t R, ptrdiff_t x0,
                        ptrdiff_t ow, const float *phases, ptrdiff_t hp, ptrdiff_t pw,
                        const float *w, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh, ptrdiff_t sw,
                        ptrdiff_t dh, ptrdiff_t dw, float bias)
{
    for (ptrdiff_t t = 0; t < R; t++)
        for (ptrdiff_t x = x0; x < ow; x++) {
            float acc = bias;
            for (ptrdiff_t i = 0; i < kh; i++)
                for (ptrdiff_t j = 0; j < kw; j++)
                    acc += w[i * kw + j] * phases[((j * dw) % sw) * hp * pw +
                                                  ((y + t) * sh + i * dh) * pw + x + (j * dw) / sw];
            out[(y + t) * os + x] = acc;
        }
}

typedef struct {
    const float *phases;
    ptrdiff_t hp, sw, dw;
    const float *w;
    float bias;
} plane_t;

AI void rows_fixed(float *out, ptrdiff_t os, ptrdiff_t y, ptrdiff_t ow, const float *const *cb,
                   ptrdiff_t pw, const float32x4_t *wv, float32x4_t vb, const int KH,
                   const int KW, const int SH, const int R, const plane_t *pl)
{
    if (ow < 4) {
        cols_scalar(out, os, y, R, 0, ow, pl->phases, pl->hp, pw, pl->w, KH, KW, SH, pl->sw, 1,
                    pl->dw, pl->bias);
        return;
    }
    const float *in[8];
    float *o = out + y * os;
    const ptrdiff_t roff = y * SH * pw;
    ptrdiff_t x = 0;
    for (; x + 8 <= ow; x += 8) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++)
            in[j] = cb[j] + roff + x;
        block_fixed(o + x, os, in, pw, wv, vb, KH, KW, SH, R, 2);
    }
    while (x < ow) {
        if (x > ow - 4)
            x = ow - 4;   /* overlapping last vector */
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++)
            in[j] = cb[j] + roff + x;
        block_fixed(o + x, os, in, pw, wv, vb, KH, KW, SH, R, 1);
        x += 4;
    }
}

AI void conv_fixed(float *out, ptrdiff_t os, ptrdiff_t oh, ptrdiff_t ow, const float *const *cb,
                   ptrdiff_t pw, const plane_t *pl, const int KH, const int KW, const int SH)
{
    float32x4_t wv[KH * KW];
#pragma GCC unroll 64
    for (int k = 0; k < KH * KW; k++)
        wv[k] = vdupq_n_f32(pl->w[k]);
    const float32x4_t vb = vdupq_n_f32(pl->bias);
    ptrdiff_t y = 0;
    for (; y + DW_R <= oh; y += DW_R)
        rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DW_R, pl);
    switch (oh - y) {
    case 3: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, 3, pl); break;
    case 2: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, 2, pl); break;
    case 1: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, 1, pl); break;
    default: break;
    }
}

#define DEF_FIXED(name, KH, KW, SH)                                                              \
    static __attribute__((noinline)) void name(float *out, ptrdiff_t os, ptrdiff_t oh,          \
                                               ptrdiff_t ow, const float *const *cb,             \
                                               ptrdiff_t pw, const plane_t *pl)                  \
    {                                                                                            \
        conv_fixed(out, os, oh, ow, cb, pw, pl, KH, KW, SH);                                     \
    }
DEF_FIXED(conv_3x3s1, 3, 3, 1)
DEF_FIXED(conv_3x3s2, 3, 3, 2)
DEF_FIXED(conv_5x5s1, 5, 5, 1)
DEF_FIXED(conv_5x5s2, 5, 5, 2)
DEF_FIXED(conv_7x7s1, 7, 7, 1)
DEF_FIXED(conv_7x7s2, 7, 7, 2)

/* Any shape: taps in a runtime loop, R rows per block, one 4-column vector. */
AI void block_generic(float *o, ptrdiff_t os, const float *phases, ptrdiff_t hp, ptrdiff_t pw,
                      ptrdiff_t y, ptrdiff_t x, const float *w, ptrdiff_t kh, ptrdiff_t kw,
                      ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw, float bias,
                      const int R)
{
    float32x4_t acc[DW_R];
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
        acc[t] = vdupq_n_f32(bias);
    const ptrdiff_t rs = sh * pw;
    for (ptrdiff_t i = 0; i < kh; i++) {
        const float *row = phases + (y * sh + i * dh) * pw + x;
        for (ptrdiff_t j = 0; j < kw; j++) {
            const float *p = row + ((j * dw) % sw) * hp * pw + (j * dw) / sw;
            const float32x4_t wij = vdupq_n_f32(w[i * kw + j]);
#pragma GCC unroll 8
            for (int t = 0; t < R; t++)
                acc[t] = vfmaq_f32(acc[t], wij, vld1q_f32(p + t * rs));
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
        vst1q_f32(o + t * os, acc[t]);
}

AI void rows_generic(float *out, ptrdiff_t os, ptrdiff_t y, ptrdiff_t ow, const float *phases,
                     ptrdiff_t hp, ptrdiff_t pw, const float *w, ptrdiff_t kh, ptrdiff_t kw,
                     ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw, float bias,
                     const int R)
{
    if (ow < 4) {
        cols_scalar(out, os, y, R, 0, ow, phases, hp, pw, w, kh, kw, sh, sw, dh, dw, bias);
        return;
    }
    float *o = out + y * os;
    ptrdiff_t x = 0;
    while (x < ow) {
        if (x > ow - 4)
            x = ow - 4;
        block_generic(o + x, os, phases, hp, pw, y, x, w, kh, kw, sh, sw, dh, dw, bias, R);
        x += 4;
    }
}

void im2row_dwconv__neon(float *out, ptrdiff_t out_stride, ptrdiff_t oh, ptrdiff_t ow,
                         const float *phases, ptrdiff_t hp, ptrdiff_t phase_w,
                         const float *w, ptrdiff_t kh, ptrdiff_t kw,
                         ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw,
                         float bias)
{
    if (!dwconv_check_args(out, out_stride, oh, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw))
        return;

    if (dh == 1 && kh == kw && (kh == 3 || kh == 5 || kh == 7) && (sh == 1 || sh == 2)) {
        const float *cb[7];
        for (ptrdiff_t j = 0; j < kw; j++)
            cb[j] = phases + dwconv_tap(j, hp, phase_w, sw, dw);
        const plane_t pl = {phases, hp, sw, dw, w, bias};
        if (kh == 3)
            (sh == 1 ? conv_3x3s1 : conv_3x3s2)(out, out_stride, oh, ow, cb, phase_w, &pl);
        else if (kh == 5)
            (sh == 1 ? conv_5x5s1 : conv_5x5s2)(out, out_stride, oh, ow, cb, phase_w, &pl);
        else
            (sh == 1 ? conv_7x7s1 : conv_7x7s2)(out, out_stride, oh, ow, cb, phase_w, &pl);
        return;
    }

    ptrdiff_t y = 0;
    for (; y + DW_R <= oh; y += DW_R)
        rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, DW_R);
    switch (oh - y) {
    case 3: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, 3); break;
    case 2: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, 2); break;
    case 1: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, 1); break;
    default: break;
    }
}
#endif
