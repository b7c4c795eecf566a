/* f32-dwconv, AVX-512 (F/BW/DQ/VL) variant.
 * Contract (im2row_kernels.h): out[y][x] = bias + sum_{i,j} w[i*kw+j] *
 * xpad[y*sh + i*dh][x*sw + j*dw], with the padded plane given as sw column phases, so tap
 * column j reads a contiguous run starting at column x + (j*dw)/sw of phase (j*dw)%sw.
 *
 * Same scheme as the AVX2 variant (vectorise along width, block output rows so one input
 * load feeds every output row that uses it, compile-time 3x3/5x5 at stride 1/2), with
 * 16-wide vectors and masked loads/stores for the width tail.  Zen 4 runs a zmm op as two
 * 256-bit halves, so a tail of <= 8 columns (all of a 7x7 plane) uses masked ymm ops
 * instead of a half-empty zmm.  Taps accumulate in (i, j) order, like the scalar oracle. */
#if defined(__x86_64__) || defined(_M_X64)
#include <assert.h>
#include <immintrin.h>

#include "im2row_kernels.h"

#define AI static inline __attribute__((always_inline))
/* Pin a loaded vector in a register: otherwise GCC folds the load into every FMA that uses
 * it, turning one load per input vector into one load per FMA. */
#define KEEP(v) __asm__("" : "+v"(v))


/* Rows per block, column vectors per block, partial sums per output vector.  More
 * independent accumulators let the FMAs of different output rows overlap. */
#ifndef DW512_R
#define DW512_R 4
#endif
#ifndef DW512_NV
#define DW512_NV 2
#endif
#ifndef DW512_SPLIT
#define DW512_SPLIT 1
#endif

/* One block of R output rows by NV zmm vectors of columns.  in[j] points at tap column j's
 * input for the block's first output row and column.  Input row ir feeds output row t
 * through kernel row i when ir == t*SH + i*DH, resolved at compile time, so each input
 * vector is loaded once per block.  m masks the valid lanes (used only when MASKED, NV=1). */
AI void block_fixed(float *o, ptrdiff_t os, const float *const *in, ptrdiff_t pw,
                    const __m512 *wv, __m512 vb, const int KH, const int KW, const int SH,
                    const int DH, const int R, const int NV, const int MASKED, __mmask16 m)
{
    const int NR = (R - 1) * SH + (KH - 1) * DH + 1;
    __m512 acc[2][8][2];
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            acc[v][t][0] = vb;
            if (DW512_SPLIT > 1)
                acc[v][t][1] = _mm512_setzero_ps();
        }
#pragma GCC unroll 64
    for (int ir = 0; ir < NR; ir++) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++) {
            const float *p = in[j] + ir * pw;
            __m512 x[2];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) {
                x[v] = MASKED ? _mm512_maskz_loadu_ps(m, p) : _mm512_loadu_ps(p + 16 * v);
                KEEP(x[v]);
            }
#pragma GCC unroll 8
            for (int t = 0; t < R; t++) {
                const int d = ir - t * SH;
                if (d >= 0 && d % DH == 0 && d / DH < KH) {
                    const int i = d / DH, h = i % DW512_SPLIT;
#pragma GCC unroll 2
                    for (int v = 0; v < NV; v++)
                        acc[v][t][h] = _mm512_fmadd_ps(wv[i * KW + j], x[v], acc[v][t][h]);
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            __m512 r = DW512_SPLIT > 1 ? _mm512_add_ps(acc[v][t][0], acc[v][t][1]) : acc[v][t][0];
            if (MASKED)
                _mm512_mask_storeu_ps(o + t * os, m, r);
            else
                _mm512_storeu_ps(o + t * os + 16 * v, r);
        }
}

/* The same with one masked ymm vector: tails of <= 8 columns. */
AI void block_fixed8(float *o, ptrdiff_t os, const float *const *in, ptrdiff_t pw,
                     const __m512 *wv, __m512 vb, const int KH, const int KW, const int SH,
                     const int DH, const int R, __mmask8 m)
{
    const int NR = (R - 1) * SH + (KH - 1) * DH + 1;
    __m256 acc[8];
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
        acc[t] = _mm512_castps512_ps256(vb);
#pragma GCC unroll 64
    for (int ir = 0; ir < NR; ir++) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++) {
            __m256 x = _mm256_maskz_loadu_ps(m, in[j] + ir * pw);
            KEEP(x);
#pragma GCC unroll 8
            for (int t = 0; t < R; t++) {
                const int d = ir - t * SH;
                if (d >= 0 && d % DH == 0 && d / DH < KH)
                    acc[t] = _mm256_fmadd_ps(_mm512_castps512_ps256(wv[(d / DH) * KW + j]), x, acc[t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
        _mm256_mask_storeu_ps(o + t * os, m, acc[t]);
}

/* R output rows starting at y, the whole width: NV-vector blocks, single vectors, then a
 * masked tail (zmm for 9..15 columns, ymm for 1..8). */
AI void rows_fixed(float *out, ptrdiff_t os, ptrdiff_t y, ptrdiff_t ow, const float *const *cb,
                   ptrdiff_t pw, const __m512 *wv, __m512 vb, const int KH, const int KW,
                   const int SH, const int DH, const int R, ptrdiff_t rem, __mmask16 tm)
{
    const float *in[8];
    float *o = out + y * os;
    const ptrdiff_t roff = y * SH * pw;
    ptrdiff_t x = 0;
    if (DW512_NV > 1) {
        for (; x + 16 * DW512_NV <= ow; x += 16 * DW512_NV) {
#pragma GCC unroll 8
            for (int j = 0; j < KW; j++)
                in[j] = cb[j] + roff + x;
            block_fixed(o + x, os, in, pw, wv, vb, KH, KW, SH, DH, R, DW512_NV, 0, 0xFFFF);
        }
    }
    for (; x + 16 <= ow; x += 16) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++)
            in[j] = cb[j] + roff + x;
        block_fixed(o + x, os, in, pw, wv, vb, KH, KW, SH, DH, R, 1, 0, 0xFFFF);
    }
    if (rem) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++)
            in[j] = cb[j] + roff + x;
        if (rem > 8)
            block_fixed(o + x, os, in, pw, wv, vb, KH, KW, SH, DH, R, 1, 1, tm);
        else
            block_fixed8(o + x, os, in, pw, wv, vb, KH, KW, SH, DH, R, (__mmask8)tm);
    }
}

AI void conv_fixed(float *out, ptrdiff_t os, ptrdiff_t oh, ptrdiff_t ow, const float *const *cb,
                   ptrdiff_t pw, const float *w, float bias, const int KH, const int KW,
                   const int SH, const int DH)
{
    __m512 wv[KH * KW];
#pragma GCC unroll 64
    for (int k = 0; k < KH * KW; k++)
        wv[k] = _mm512_set1_ps(w[k]);
    const __m512 vb = _mm512_set1_ps(bias);
    const ptrdiff_t rem = ow % 16;
    const __mmask16 tm = (__mmask16)((1u << rem) - 1u);
    ptrdiff_t y = 0;
    for (; y + DW512_R <= oh; y += DW512_R)
        rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, DW512_R, rem, tm);
    switch (oh - y) {
#if DW512_R > 7
    case 7: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, 7, rem, tm); break;
#endif
#if DW512_R > 6
    case 6: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, 6, rem, tm); break;
#endif
#if DW512_R > 5
    case 5: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, 5, rem, tm); break;
#endif
#if DW512_R > 4
    case 4: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, 4, rem, tm); break;
#endif
    case 3: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, 3, rem, tm); break;
    case 2: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, 2, rem, tm); break;
    case 1: rows_fixed(out, os, y, ow, cb, pw, wv, vb, KH, KW, SH, DH, 1, rem, tm); break;
    default: break;
    }
}

/* Any shape: taps in a runtime loop, R rows per block so each weight broadcast feeds R
 * FMAs (one load per FMA: no row sharing). */
#define GEN_R 4
AI void block_generic(float *o, ptrdiff_t os, const float *phases, ptrdiff_t hp, ptrdiff_t pw,
                      ptrdiff_t y, ptrdiff_t x, const float *w, ptrdiff_t kh, ptrdiff_t kw,
                      ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw, float bias,
                      const int R, const int WIDE, const int MASKED, __mmask16 m)
{
    const ptrdiff_t rs = sh * pw;
    if (WIDE) {
        __m512 acc[GEN_R];
#pragma GCC unroll 8
        for (int t = 0; t < R; t++)
            acc[t] = _mm512_set1_ps(bias);
        for (ptrdiff_t i = 0; i < kh; i++) {
            const float *row = phases + (y * sh + i * dh) * pw + x;
            for (ptrdiff_t j = 0; j < kw; j++) {
                const float *p = row + ((j * dw) % sw) * hp * pw + (j * dw) / sw;
                const __m512 wij = _mm512_set1_ps(w[i * kw + j]);
#pragma GCC unroll 8
                for (int t = 0; t < R; t++) {
                    __m512 v = MASKED ? _mm512_maskz_loadu_ps(m, p + t * rs) : _mm512_loadu_ps(p + t * rs);
                    acc[t] = _mm512_fmadd_ps(wij, v, acc[t]);
                }
            }
        }
#pragma GCC unroll 8
        for (int t = 0; t < R; t++) {
            if (MASKED)
                _mm512_mask_storeu_ps(o + t * os, m, acc[t]);
            else
                _mm512_storeu_ps(o + t * os, acc[t]);
        }
    } else {
        __m256 acc[GEN_R];
        const __mmask8 m8 = (__mmask8)m;
#pragma GCC unroll 8
        for (int t = 0; t < R; t++)
            acc[t] = _mm256_set1_ps(bias);
        for (ptrdiff_t i = 0; i < kh; i++) {
            const float *row = phases + (y * sh + i * dh) * pw + x;
            for (ptrdiff_t j = 0; j < kw; j++) {
                const float *p = row + ((j * dw) % sw) * hp * pw + (j * dw) / sw;
                const __m256 wij = _mm256_set1_ps(w[i * kw + j]);
#pragma GCC unroll 8
                for (int t = 0; t < R; t++)
                    acc[t] = _mm256_fmadd_ps(wij, _mm256_maskz_loadu_ps(m8, p + t * rs), acc[t]);
            }
        }
#pragma GCC unroll 8
        for (int t = 0; t < R; t++)
            _mm256_mask_storeu_ps(o + t * os, m8, acc[t]);
    }
}

AI void rows_generic(float *out, ptrdiff_t os, ptrdiff_t y, ptrdiff_t ow, const float *phases,
                     ptrdiff_t hp, ptrdiff_t pw, const float *w, ptrdiff_t kh, ptrdiff_t kw,
                     ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw, float bias,
                     const int R, ptrdiff_t rem, __mmask16 tm)
{
    float *o = out + y * os;
    ptrdiff_t x = 0;
    for (; x + 16 <= ow; x += 16)
        block_generic(o + x, os, phases, hp, pw, y, x, w, kh, kw, sh, sw, dh, dw, bias, R, 1, 0, 0xFFFF);
    if (rem > 8)
        block_generic(o + x, os, phases, hp, pw, y, x, w, kh, kw, sh, sw, dh, dw, bias, R, 1, 1, tm);
    else if (rem)
        block_generic(o + x, os, phases, hp, pw, y, x, w, kh, kw, sh, sw, dh, dw, bias, R, 0, 1, tm);
}

/* One out-of-line instance per specialised shape, so each gets its own register allocation. */
#define DEF_FIXED(name, KH, KW, SH, DH)                                                          \
    static __attribute__((noinline)) void name(float *out, ptrdiff_t os, ptrdiff_t oh,          \
                                               ptrdiff_t ow, const float *const *cb,             \
                                               ptrdiff_t pw, const float *w, float bias)         \
    {                                                                                            \
        conv_fixed(out, os, oh, ow, cb, pw, w, bias, KH, KW, SH, DH);                            \
    }
DEF_FIXED(conv_3x3s1, 3, 3, 1, 1)
DEF_FIXED(conv_3x3s2, 3, 3, 2, 1)
DEF_FIXED(conv_5x5s1, 5, 5, 1, 1)
DEF_FIXED(conv_5x5s2, 5, 5, 2, 1)

/* ---- "shift" kernels: sw == dw-stride layout known at compile time -------------------
 * A zmm load that is not 64-byte aligned costs about two load slots here, and a 3-tap row
 * would need three of them (columns x, x+1, x+2).  Instead each phase row is loaded once
 * per 16 columns and the shifted windows are built with valignd from this vector and the
 * next one, which is carried to the next column step.  Tap column j lives in phase j % SW
 * at shift j / SW (dilation 1). */
#ifndef SH512_R
#define SH512_R 4
#endif

AI __mmask16 lanes_below(ptrdiff_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* R output rows (starting at o / input rows at ph), the whole width. */
AI void rows_shift(float *o, ptrdiff_t os, const float *ph, ptrdiff_t php, ptrdiff_t pw,
                   ptrdiff_t ow, const __m512 *wv, __m512 vb, const int KH, const int KW,
                   const int SH, const int SW, const int R)
{
    const int NR = (R - 1) * SH + KH;
    const int P = SW < KW ? SW : KW;          /* phases in use */
    __m512 prev[16][2];                       /* carried: [input row][phase] */
    /* first vector of every carried phase row */
    {
        const __mmask16 m0 = lanes_below(pw);
#pragma GCC unroll 32
        for (int ir = 0; ir < NR; ir++)
#pragma GCC unroll 4
            for (int p = 0; p < P; p++)
                if ((KW - 1 - p) / SW > 0)
                    prev[ir][p] = _mm512_maskz_loadu_ps(m0, ph + p * php + ir * pw);
    }
    for (ptrdiff_t x = 0; x < ow; x += 16) {
        const __mmask16 nm = lanes_below(pw - x - 16);   /* next vector, clipped to the row */
        const __mmask16 cm = lanes_below(pw - x);        /* this vector */
        const __mmask16 om = lanes_below(ow - x);        /* outputs */
        __m512 acc[8];
#pragma GCC unroll 8
        for (int t = 0; t < R; t++)
            acc[t] = vb;
#pragma GCC unroll 32
        for (int ir = 0; ir < NR; ir++) {
#pragma GCC unroll 4
            for (int p = 0; p < P; p++) {
                const float *row = ph + p * php + ir * pw + x;
                const int carried = (KW - 1 - p) / SW > 0;
                __m512 cur, nxt = _mm512_setzero_ps();
                if (carried) {
                    nxt = _mm512_maskz_loadu_ps(nm, row + 16);
                    KEEP(nxt);
                    cur = prev[ir][p];
                } else {
                    cur = _mm512_maskz_loadu_ps(cm, row);
                    KEEP(cur);
                }
#pragma GCC unroll 8
                for (int j = p; j < KW; j += SW) {
                    const int q = j / SW;
                    __m512 v = q ? _mm512_castsi512_ps(_mm512_alignr_epi32(
                                       _mm512_castps_si512(nxt), _mm512_castps_si512(cur), q))
                                 : cur;
#pragma GCC unroll 8
                    for (int t = 0; t < R; t++) {
                        const int i = ir - t * SH;
                        if (i >= 0 && i < KH)
                            acc[t] = _mm512_fmadd_ps(wv[i * KW + j], v, acc[t]);
                    }
                }
                if (carried)
                    prev[ir][p] = nxt;
            }
        }
#pragma GCC unroll 8
        for (int t = 0; t < R; t++)
            _mm512_mask_storeu_ps(o + t * os + x, om, acc[t]);
    }
}

AI void conv_shift(float *out, ptrdiff_t os, ptrdiff_t oh, ptrdiff_t ow, const float *phases,
                   ptrdiff_t hp, ptrdiff_t pw, const float *w, float bias, const int KH,
                   const int KW, const int SH, const int SW)
{
    __m512 wv[KH * KW];
#pragma GCC unroll 64
    for (int k = 0; k < KH * KW; k++)
        wv[k] = _mm512_set1_ps(w[k]);
    const __m512 vb = _mm512_set1_ps(bias);
    const ptrdiff_t php = hp * pw;
    ptrdiff_t y = 0;
    for (; y + SH512_R <= oh; y += SH512_R)
        rows_shift(out + y * os, os, phases + y * SH * pw, php, pw, ow, wv, vb, KH, KW, SH, SW, SH512_R);
    float *o = out + y * os;
    const float *ph = phases + y * SH * pw;
    switch (oh - y) {
#if SH512_R > 5
    case 5: rows_shift(o, os, ph, php, pw, ow, wv, vb, KH, KW, SH, SW, 5); break;
#endif
#if SH512_R > 4
    case 4: rows_shift(o, os, ph, php, pw, ow, wv, vb, KH, KW, SH, SW, 4); break;
#endif
    case 3: rows_shift(o, os, ph, php, pw, ow, wv, vb, KH, KW, SH, SW, 3); break;
    case 2: rows_shift(o, os, ph, php, pw, ow, wv, vb, KH, KW, SH, SW, 2); break;
    case 1: rows_shift(o, os, ph, php, pw, ow, wv, vb, KH, KW, SH, SW, 1); break;
    default: break;
    }
}

#define DEF_SHIFT(name, KH, KW, SH, SW)                                                          \
    static __attribute__((noinline)) void name(float *out, ptrdiff_t os, ptrdiff_t oh,          \
                                               ptrdiff_t ow, const float *phases, ptrdiff_t hp,  \
                                               ptrdiff_t pw, const float *w, float bias)         \
    {                                                                                            \
        conv_shift(out, os, oh, ow, phases, hp, pw, w, bias, KH, KW, SH, SW);                    \
    }
DEF_SHIFT(shift_3x3s1, 3, 3, 1, 1)
DEF_SHIFT(shift_3x3s2, 3, 3, 2, 2)
DEF_SHIFT(shift_5x5s1, 5, 5, 1, 1)
DEF_SHIFT(shift_5x5s2, 5, 5, 2, 2)

void im2row_dwconv__avx512(float *out, ptrdiff_t out_stride, ptrdiff_t oh, ptrdiff_t ow,
                           const float *phases, ptrdiff_t hp, ptrdiff_t phase_w,
                           const float *w, ptrdiff_t kh, ptrdiff_t kw,
                           ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw,
                           float bias)
{
    assert(oh >= 0 && ow >= 0);
    assert(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && dh >= 1 && dw >= 1);
    assert(out_stride >= ow);
    if (oh == 0 || ow == 0)
        return;
    assert(out != NULL && phases != NULL && w != NULL);
    assert(phase_w >= ow + ((kw - 1) * dw) / sw);
    assert(hp >= (oh - 1) * sh + (kh - 1) * dh + 1);

#ifndef NO_SHIFT
    if (dh == 1 && dw == 1 && kh == kw && (kh == 3 || kh == 5) && sh == sw && (sh == 1 || sh == 2)) {
        if (kh == 3) {
            if (sh == 1)
                shift_3x3s1(out, out_stride, oh, ow, phases, hp, phase_w, w, bias);
            else
                shift_3x3s2(out, out_stride, oh, ow, phases, hp, phase_w, w, bias);
        } else {
            if (sh == 1)
                shift_5x5s1(out, out_stride, oh, ow, phases, hp, phase_w, w, bias);
            else
                shift_5x5s2(out, out_stride, oh, ow, phases, hp, phase_w, w, bias);
        }
        return;
    }
#endif
    if (dh == 1 && kh == kw && (kh == 3 || kh == 5) && (sh == 1 || sh == 2)) {
        const float *cb[8];
        for (ptrdiff_t j = 0; j < kw; j++)
            cb[j] = phases + ((j * dw) % sw) * hp * phase_w + (j * dw) / sw;
        if (kh == 3) {
            if (sh == 1)
                conv_3x3s1(out, out_stride, oh, ow, cb, phase_w, w, bias);
            else
                conv_3x3s2(out, out_stride, oh, ow, cb, phase_w, w, bias);
        } else {
            if (sh == 1)
                conv_5x5s1(out, out_stride, oh, ow, cb, phase_w, w, bias);
            else
                conv_5x5s2(out, out_stride, oh, ow, cb, phase_w, w, bias);
        }
        return;
    }

    const ptrdiff_t rem = ow % 16;
    const __mmask16 tm = (__mmask16)((1u << rem) - 1u);
    ptrdiff_t y = 0;
    for (; y + GEN_R <= oh; y += GEN_R)
        rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, GEN_R, rem, tm);
    switch (oh - y) {
    case 3: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, 3, rem, tm); break;
    case 2: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, 2, rem, tm); break;
    case 1: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, 1, rem, tm); break;
    default: break;
    }
}
#endif
