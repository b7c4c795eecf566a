/* f32-dwconv, AVX2+FMA variant.
 * Contract (im2row_kernels.h): out[y][x] = bias + sum_{i,j} w[i*kw+j] *
 * xpad[y*sh + i*dh][x*sw + j*dw], with the padded plane given as sw column phases, so tap
 * column j reads a contiguous run starting at column x + (j*dw)/sw of phase (j*dw)%sw.
 * `out` must not overlap `phases` (the width tail recomputes a few columns).
 *
 * Scheme: vectorise along output width (8 columns), block R output rows so that every
 * loaded input vector feeds all the output rows that use it (up to kh FMAs per load).
 * Shapes with compile-time kh, kw, sh, dh (3x3, 5x5 and 7x7, stride 1/2: the MobileNet,
 * EfficientNet and ConvNeXt cases) get fully unrolled blocks with the weights held in registers; other
 * shapes run a generic tap loop.  Width tail: when ow >= 8 the last vector is moved back to
 * end at ow (it recomputes some columns with identical results); when ow < 8 the loads are
 * masked and the store is split into 4/2/1-float pieces (AMD's vmaskmovps store is slow).
 * Taps accumulate in (i, j) order, like the scalar oracle. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "im2row_kernels.h"
#include "dwconv-common.h"

#define AI static inline __attribute__((always_inline))
/* Pin a loaded vector in a register: otherwise GCC folds the load into every FMA that uses
 * it, turning one load per input vector into one load per FMA. */
#define KEEP(v) __asm__("" : "+x"(v))

/* Rows per block.  4 keeps 4 accumulators + 9 weights + a load in 16 ymm registers.
 * (Tried for 7x7 planes: 6-7 rows with two partial sums per output, weights from memory;
 * slower here.) */
#define DW_R 4

/* Store the first cnt (1..7) lanes of v.  perm holds lane indices cnt-4 .. cnt+3. */
AI void store_part(float *o, __m256 v, ptrdiff_t cnt, __m256i perm)
{
    __m128 lo = _mm256_castps256_ps128(v);
    if (cnt >= 4) {
        _mm_storeu_ps(o, lo);
        if (cnt > 4)
            _mm_storeu_ps(o + cnt - 4, _mm256_castps256_ps128(_mm256_permutevar8x32_ps(v, perm)));
    } else if (cnt >= 2) {
        _mm_storel_pi((__m64 *)o, lo);
        if (cnt == 3)
            _mm_store_ss(o + 2, _mm_movehl_ps(lo, lo));
    } else {
        _mm_store_ss(o, lo);
    }
}

typedef struct {
    __m256i mask;   /* lanes < cnt, for the masked tail */
    __m256i perm;   /* see store_part */
    ptrdiff_t cnt;  /* valid lanes of the masked tail (1..7) */
} tail_t;

/* R output rows x 8 columns.  in[j] points at tap column j's input for the block's first
 * output row and first column.  Input row ir of the block feeds output row t through kernel
 * row i when ir == t*SH + i*DH; all of that resolves at compile time. */
AI void block_fixed(float *o, ptrdiff_t os, const float *const *in, ptrdiff_t pw,
                    const __m256 *wv, __m256 vb, const int KH, const int KW, const int SH,
                    const int DH, const int R, const int MASKED, const tail_t *tl)
{
    __m256 acc[DW_R];
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
        acc[t] = vb;
    const int NR = (R - 1) * SH + (KH - 1) * DH + 1;
#pragma GCC unroll 64
    for (int ir = 0; ir < NR; ir++) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++) {
            const float *p = in[j] + ir * pw;
            __m256 v = MASKED ? _mm256_maskload_ps(p, tl->mask) : _mm256_loadu_ps(p);
            KEEP(v);
#pragma GCC unroll 8
            for (int t = 0; t < R; t++) {
                const int d = ir - t * SH;
                if (d >= 0 && d % DH == 0 && d / DH < KH)
                    acc[t] = _mm256_fmadd_ps(wv[(d / DH) * KW + j], v, acc[t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < R; t++) {
        if (MASKED)
            store_part(o + t * os, acc[t], tl->cnt, tl->perm);
        else
            _mm256_storeu_ps(o + t * os, acc[t]);
    }
}

/* R output rows starting at y, the whole width. */
AI void rows_fixed(float *out, ptrdiff_t os, ptrdiff_t y, ptrdiff_t ow, const float *const *cb,
                   ptrdiff_t pw, const __m256 *wv, __m256 vb, const int KH, const int KW,
                   const int SH, const int DH, const int R, const tail_t *tl)
{
    const float *in[8];
    float *o = out + y * os;
    const ptrdiff_t roff = y * SH * pw;
    if (ow < 8) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++)
            in[j] = cb[j] + roff;
        block_fixed(o, os, in, pw, wv, vb, KH, KW, SH, DH, R, 1, tl);
        return;
    }
    ptrdiff_t x = 0;
    for (;;) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++)
            in[j] = cb[j] + roff + x;
        block_fixed(o + x, os, in, pw, wv, vb, KH, KW, SH, DH, R, 0, tl);
        if (x == ow - 8)
            break;
        x += 8;
        if (x > ow - 8)
            x = ow - 8;   /* overlapping last vector */
    }
}

AI void conv_fixed(float *out, ptrdiff_t os, ptrdiff_t oh, ptrdiff_t ow, const float *const *cb,
                   ptrdiff_t pw, const float *w, float bias, const int KH, const int KW,
                   const int SH, const int DH, const tail_t *tl)
{
    __m256 wv[KH * KW];
#pragma GCC unroll 64
    for (int k = 0; k < KH * KW; k++)
        wv[k] = _mm256_set1_ps(w[k]);
    const __m256 vb = _mm256_set1_ps(bias);
    ptrdiff_t y = 0;
    for (; y + DW_R <= oh; y += DW_R)
        rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, DW_R, tl);
    switch (oh - y) {
    case 3: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, 3, tl); break;
    case 2: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, 2, tl); break;
    case 1: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, 1, tl); break;
    default: break;
    }
}

/* Any shape: taps in a runtime loop, DW_R rows per block so each weight broadcast feeds
 * DW_R FMAs.  One load per FMA (no row sharing), which Zen 4's two load ports sustain. */
AI void block_generic(float *o, ptrdiff_t os, const float *phases, ptrdiff_t hp, ptrdiff_t pw,
                      ptrdiff_t y, ptrdiff_t x, const float *w, ptrdiff_t kh, ptrdiff_t kw,
                      ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw, __m256 vb,
                      const int R, const int MASKED, const tail_t *tl)
{
    __m256 acc[DW_R];
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
        acc[t] = vb;
    const ptrdiff_t rs = sh * pw;
    for (ptrdiff_t i = 0; i < kh; i++) {
        const ptrdiff_t r = y * sh + i * dh;
        for (ptrdiff_t j = 0; j < kw; j++) {
            const float *p = phases + ((j * dw) % sw) * hp * pw + r * pw + x + (j * dw) / sw;
            const __m256 wij = _mm256_set1_ps(w[i * kw + j]);
#pragma GCC unroll 8
            for (int t = 0; t < R; t++) {
                __m256 v = MASKED ? _mm256_maskload_ps(p + t * rs, tl->mask) : _mm256_loadu_ps(p + t * rs);
                acc[t] = _mm256_fmadd_ps(wij, v, acc[t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < R; t++) {
        if (MASKED)
            store_part(o + t * os, acc[t], tl->cnt, tl->perm);
        else
            _mm256_storeu_ps(o + t * os, acc[t]);
    }
}

AI void rows_generic(float *out, ptrdiff_t os, ptrdiff_t y, ptrdiff_t ow, const float *phases,
                     ptrdiff_t hp, ptrdiff_t pw, const float *w, ptrdiff_t kh, ptrdiff_t kw,
                     ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw, __m256 vb,
                     const int R, const tail_t *tl)
{
    float *o = out + y * os;
    if (ow < 8) {
        block_generic(o, os, phases, hp, pw, y, 0, w, kh, kw, sh, sw, dh, dw, vb, R, 1, tl);
        return;
    }
    ptrdiff_t x = 0;
    for (;;) {
        block_generic(o + x, os, phases, hp, pw, y, x, w, kh, kw, sh, sw, dh, dw, vb, R, 0, tl);
        if (x == ow - 8)
            break;
        x += 8;
        if (x > ow - 8)
            x = ow - 8;
    }
}

/* One out-of-line instance per specialised shape, so each gets its own register allocation. */
#define DEF_FIXED(name, KH, KW, SH, DH)                                                          \
    static __attribute__((noinline)) void name(float *out, ptrdiff_t os, ptrdiff_t oh,          \
                                               ptrdiff_t ow, const float *const *cb,             \
                                               ptrdiff_t pw, const float *w, float bias,         \
                                               const tail_t *tl)                                 \
    {                                                                                            \
        conv_fixed(out, os, oh, ow, cb, pw, w, bias, KH, KW, SH, DH, tl);                        \
    }
DEF_FIXED(conv_3x3s1, 3, 3, 1, 1)
DEF_FIXED(conv_3x3s2, 3, 3, 2, 1)
DEF_FIXED(conv_5x5s1, 5, 5, 1, 1)
DEF_FIXED(conv_5x5s2, 5, 5, 2, 1)
DEF_FIXED(conv_7x7s1, 7, 7, 1, 1)
DEF_FIXED(conv_7x7s2, 7, 7, 2, 1)

void im2row_dwconv__avx2(float *out, ptrdiff_t out_stride, ptrdiff_t oh, ptrdiff_t ow,
                         const float *phases, ptrdiff_t hp, ptrdiff_t phase_w,
                         const float *w, ptrdiff_t kh, ptrdiff_t kw,
                         ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw,
                         float bias)
{
    if (!dwconv_check_args(out, out_stride, oh, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw))
        return;

    tail_t tl;
    tl.cnt = ow < 8 ? ow : 0;
    {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        tl.mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)tl.cnt), lane);
        tl.perm = _mm256_add_epi32(lane, _mm256_set1_epi32((int)(tl.cnt - 4)));
    }

    if (dh == 1 && kh == kw && (kh == 3 || kh == 5 || kh == 7) && (sh == 1 || sh == 2)) {
        const float *cb[7];
        for (ptrdiff_t j = 0; j < kw; j++)
            cb[j] = phases + dwconv_tap(j, hp, phase_w, sw, dw);
        if (kh == 3)
            (sh == 1 ? conv_3x3s1 : conv_3x3s2)(out, out_stride, oh, ow, cb, phase_w, w, bias, &tl);
        else if (kh == 5)
            (sh == 1 ? conv_5x5s1 : conv_5x5s2)(out, out_stride, oh, ow, cb, phase_w, w, bias, &tl);
        else
            (sh == 1 ? conv_7x7s1 : conv_7x7s2)(out, out_stride, oh, ow, cb, phase_w, w, bias, &tl);
        return;
    }

    const __m256 vb = _mm256_set1_ps(bias);
    ptrdiff_t y = 0;
    for (; y + DW_R <= oh; y += DW_R)
        rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, vb, DW_R, &tl);
    switch (oh - y) {
    case 3: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, vb, 3, &tl); break;
    case 2: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, vb, 2, &tl); break;
    case 1: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, vb, 1, &tl); break;
    default: break;
    }
}
#endif
