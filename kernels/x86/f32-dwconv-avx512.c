/* f32-dwconv, AVX-512 (F/BW/DQ/VL) variant.
 * Contract (im2row_kernels.h): out[y][x] = bias + sum_{i,j} w[i*kw+j] *
 * xpad[y*sh + i*dh][x*sw + j*dw], with the padded plane given as sw column phases, so tap
 * column j reads a contiguous run starting at column x + (j*dw)/sw of phase (j*dw)%sw.
 * `out` must not overlap `phases`.
 *
 * Vectorised along output width (16 columns), with blocks of R output rows so that each
 * loaded input vector feeds every output row that uses it.  Paths:
 *  - shift: 3x3, 5x5 and 7x7 at stride 1, no dilation (MobileNet, EfficientNet, ConvNeXt).  A zmm load that is not 64-byte aligned costs about two load slots, and
 *    a 3-tap row would need three of them, so each phase row is loaded once per 16 columns
 *    and the shifted windows are made with valignd from it and the next vector, which is
 *    carried to the next step.  (Aligned rows help further: see the integrator notes.)
 *  - narrow: 3x3 planes at most 8 wide, or 16 wide when the stride-1 shift path does not
 *    apply: one masked vector per row (ymm when <= 8 wide), up to 8 rows per block and two
 *    partial sums per output, so that small planes are not bound by FMA latency.
 *  - pointer: the other 3x3/5x5/7x7 stride-1/2 cases (stride 2, dilated columns): one load per
 *    tap column and input row, rows still shared.  Stride 2 is bound by L2->L1 traffic (each
 *    output row needs two fresh input rows), not by the loads' alignment.
 *  - generic: any other shape, taps in a runtime loop.
 * Masked loads/stores handle every width tail; masked-off lanes are never accessed, so
 * nothing outside the contract's rows is read or written.
 * Taps accumulate in (i, j) order except in the narrow path (two interleaved partial sums);
 * results agree with the scalar oracle to rounding. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "im2row_kernels.h"
#include "dwconv-common.h"

#define AI static inline __attribute__((always_inline))
/* Pin a loaded vector in a register: otherwise GCC folds the load into every FMA that uses
 * it, turning one load per input vector into one load per FMA. */
#define KEEP(v) __asm__("" : "+v"(v))

AI __mmask16 lanes_below(ptrdiff_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* ---- shift path ------------------------------------------------------------------------ */

/* One step of 16 columns for R output rows at column x.  Tap column j lives in phase
 * j % SW at shift j / SW.  prev[ir][p] holds the current vector of each phase row that has
 * shifted taps and is replaced by the next one. */
AI void shift_step(float *o, ptrdiff_t os, const float *ph, ptrdiff_t php, ptrdiff_t pw,
                   ptrdiff_t x, __m512 (*prev)[2], const __m512 *wv, __m512 vb, const int KH,
                   const int KW, const int SH, const int SW, const int R, const int MASKED,
                   __mmask16 nm, __mmask16 cm, __mmask16 om)
{
    const int NR = (R - 1) * SH + KH;
    const int P = SW < KW ? SW : KW;
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
                nxt = MASKED ? _mm512_maskz_loadu_ps(nm, row + 16) : _mm512_loadu_ps(row + 16);
                KEEP(nxt);
                cur = prev[ir][p];
            } else {
                cur = MASKED ? _mm512_maskz_loadu_ps(cm, row) : _mm512_loadu_ps(row);
                KEEP(cur);
            }
#pragma GCC unroll 8
            for (int j = p; j < KW; j += SW) {
                const int q = j / SW;
                const __m512 v = q ? _mm512_castsi512_ps(_mm512_alignr_epi32(
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
    for (int t = 0; t < R; t++) {
        if (MASKED)
            _mm512_mask_storeu_ps(o + t * os + x, om, acc[t]);
        else
            _mm512_storeu_ps(o + t * os + x, acc[t]);
    }
}

/* R output rows (starting at o / input rows at ph), the whole width: unmasked steps while
 * the next vector lies inside the row, masked steps for the rest. */
AI void rows_shift(float *o, ptrdiff_t os, const float *ph, ptrdiff_t php, ptrdiff_t pw,
                   ptrdiff_t ow, const __m512 *wv, __m512 vb, const int KH, const int KW,
                   const int SH, const int SW, const int R)
{
    const int NR = (R - 1) * SH + KH;
    const int P = SW < KW ? SW : KW;
    __m512 prev[16][2];
    const __mmask16 m0 = lanes_below(pw);
#pragma GCC unroll 32
    for (int ir = 0; ir < NR; ir++)
#pragma GCC unroll 4
        for (int p = 0; p < P; p++)
            if ((KW - 1 - p) / SW > 0)
                prev[ir][p] = _mm512_maskz_loadu_ps(m0, ph + p * php + ir * pw);
    ptrdiff_t x = 0;
    for (; x + 16 <= ow && x + 32 <= pw; x += 16)
        shift_step(o, os, ph, php, pw, x, prev, wv, vb, KH, KW, SH, SW, R, 0, 0, 0, 0);
    for (; x < ow; x += 16)
        shift_step(o, os, ph, php, pw, x, prev, wv, vb, KH, KW, SH, SW, R, 1,
                   lanes_below(pw - x - 16), lanes_below(pw - x), lanes_below(ow - x));
}

/* Rows per block: 4 (6 input rows carried), 3 at stride 2 (7 rows, 2 phases). */
AI void conv_shift(float *out, ptrdiff_t os, ptrdiff_t oh, ptrdiff_t ow, const float *phases,
                   ptrdiff_t hp, ptrdiff_t pw, const float *w, float bias, const int KH,
                   const int KW, const int SH, const int SW)
{
    const int R = SH == 1 ? 4 : 3;
    __m512 wv[KH * KW];
#pragma GCC unroll 64
    for (int k = 0; k < KH * KW; k++)
        wv[k] = _mm512_set1_ps(w[k]);
    const __m512 vb = _mm512_set1_ps(bias);
    const ptrdiff_t php = hp * pw;
    ptrdiff_t y = 0;
    for (; y + R <= oh; y += R)
        rows_shift(out + y * os, os, phases + y * SH * pw, php, pw, ow, wv, vb, KH, KW, SH, SW, R);
    float *o = out + y * os;
    const float *ph = phases + y * SH * pw;
    switch (oh - y) {
    case 3: rows_shift(o, os, ph, php, pw, ow, wv, vb, KH, KW, SH, SW, 3); break;
    case 2: rows_shift(o, os, ph, php, pw, ow, wv, vb, KH, KW, SH, SW, 2); break;
    case 1: rows_shift(o, os, ph, php, pw, ow, wv, vb, KH, KW, SH, SW, 1); break;
    default: break;
    }
}

/* ---- pointer and narrow paths ------------------------------------------------------------
 * in[j] points at tap column j's input for the block's first output row and column.  Input
 * row ir feeds output row t through kernel row i when ir == t*SH + i*DH, resolved at compile
 * time.  With SPLIT = 2, taps alternate between two partial sums per output. */
#define DEFINE_BLOCK_PTR(name, VT, MT, SET1, ZERO, LOADU, MLOADU, STOREU, MSTOREU, FMADD, ADD, WCAST) \
    AI void name(float *o, ptrdiff_t os, const float *const *in, ptrdiff_t pw, const __m512 *wv,   \
                 float bias, const int KH, const int KW, const int SH, const int DH, const int R,   \
                 const int SPLIT, const int MASKED, MT m)                                          \
    {                                                                                              \
        const int NR = (R - 1) * SH + (KH - 1) * DH + 1;                                           \
        VT acc[8][2];                                                                              \
        _Pragma("GCC unroll 8") for (int t = 0; t < R; t++)                                        \
        {                                                                                          \
            acc[t][0] = SET1(bias);                                                                \
            acc[t][1] = ZERO();                                                                    \
        }                                                                                          \
        _Pragma("GCC unroll 64") for (int ir = 0; ir < NR; ir++)                                   \
        {                                                                                          \
            _Pragma("GCC unroll 8") for (int j = 0; j < KW; j++)                                   \
            {                                                                                      \
                const float *p = in[j] + ir * pw;                                                  \
                VT v = MASKED ? MLOADU(m, p) : LOADU(p);                                           \
                KEEP(v);                                                                           \
                _Pragma("GCC unroll 8") for (int t = 0; t < R; t++)                                \
                {                                                                                  \
                    const int d = ir - t * SH;                                                     \
                    if (d >= 0 && d % DH == 0 && d / DH < KH) {                                    \
                        const int k = (d / DH) * KW + j, h = SPLIT > 1 ? k % 2 : 0;                \
                        acc[t][h] = FMADD(WCAST(wv[k]), v, acc[t][h]);                             \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 8") for (int t = 0; t < R; t++)                                        \
        {                                                                                          \
            VT r = SPLIT > 1 ? ADD(acc[t][0], acc[t][1]) : acc[t][0];                              \
            if (MASKED)                                                                            \
                MSTOREU(o + t * os, m, r);                                                         \
            else                                                                                   \
                STOREU(o + t * os, r);                                                             \
        }                                                                                          \
    }

#define ID512(x) (x)
DEFINE_BLOCK_PTR(block_ptr16, __m512, __mmask16, _mm512_set1_ps, _mm512_setzero_ps, _mm512_loadu_ps,
                 _mm512_maskz_loadu_ps, _mm512_storeu_ps, _mm512_mask_storeu_ps, _mm512_fmadd_ps,
                 _mm512_add_ps, ID512)
DEFINE_BLOCK_PTR(block_ptr8, __m256, __mmask8, _mm256_set1_ps, _mm256_setzero_ps, _mm256_loadu_ps,
                 _mm256_maskz_loadu_ps, _mm256_storeu_ps, _mm256_mask_storeu_ps, _mm256_fmadd_ps,
                 _mm256_add_ps, _mm512_castps512_ps256)

/* R output rows starting at y, the whole width: full zmm vectors, then a masked tail (zmm
 * for 9..15 columns, ymm for 1..8: on Zen 4 a zmm op costs two ymm ops). */
AI void rows_ptr(float *out, ptrdiff_t os, ptrdiff_t y, ptrdiff_t ow, const float *const *cb,
                 ptrdiff_t pw, const __m512 *wv, float bias, const int KH, const int KW,
                 const int SH, const int DH, const int R, const int SPLIT)
{
    const float *in[8];
    float *o = out + y * os;
    const ptrdiff_t roff = y * SH * pw;
    ptrdiff_t x = 0;
    for (; x + 16 <= ow; x += 16) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++)
            in[j] = cb[j] + roff + x;
        block_ptr16(o + x, os, in, pw, wv, bias, KH, KW, SH, DH, R, SPLIT, 0, 0xFFFF);
    }
    const ptrdiff_t rem = ow - x;
    if (rem) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++)
            in[j] = cb[j] + roff + x;
        const __mmask16 tm = lanes_below(rem);
        if (rem > 8)
            block_ptr16(o + x, os, in, pw, wv, bias, KH, KW, SH, DH, R, SPLIT, 1, tm);
        else
            block_ptr8(o + x, os, in, pw, wv, bias, KH, KW, SH, DH, R, SPLIT, 1, (__mmask8)tm);
    }
}

/* Blocks of RB rows (RB = 4, or 8 with two partial sums for narrow planes). */
AI void conv_ptr(float *out, ptrdiff_t os, ptrdiff_t oh, ptrdiff_t ow, const float *const *cb,
                 ptrdiff_t pw, const float *w, float bias, const int KH, const int KW,
                 const int SH, const int DH, const int RB, const int SPLIT)
{
    __m512 wv[KH * KW];
#pragma GCC unroll 64
    for (int k = 0; k < KH * KW; k++)
        wv[k] = _mm512_set1_ps(w[k]);
    ptrdiff_t y = 0;
    for (; y + RB <= oh; y += RB)
        rows_ptr(out, os, y, ow, cb, pw, wv, bias, KH, KW, SH, DH, RB, SPLIT);
    switch (oh - y) {
    case 7: if (RB > 7) rows_ptr(out, os, y, ow, cb, pw, wv, bias, KH, KW, SH, DH, 7, SPLIT); break;
    case 6: if (RB > 6) rows_ptr(out, os, y, ow, cb, pw, wv, bias, KH, KW, SH, DH, 6, SPLIT); break;
    case 5: if (RB > 5) rows_ptr(out, os, y, ow, cb, pw, wv, bias, KH, KW, SH, DH, 5, SPLIT); break;
    case 4: if (RB > 4) rows_ptr(out, os, y, ow, cb, pw, wv, bias, KH, KW, SH, DH, 4, SPLIT); break;
    case 3: rows_ptr(out, os, y, ow, cb, pw, wv, bias, KH, KW, SH, DH, 3, SPLIT); break;
    case 2: rows_ptr(out, os, y, ow, cb, pw, wv, bias, KH, KW, SH, DH, 2, SPLIT); break;
    case 1: rows_ptr(out, os, y, ow, cb, pw, wv, bias, KH, KW, SH, DH, 1, SPLIT); break;
    default: break;
    }
}

/* ---- generic path --------------------------------------------------------------------- */

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
                     const int R)
{
    float *o = out + y * os;
    ptrdiff_t x = 0;
    for (; x + 16 <= ow; x += 16)
        block_generic(o + x, os, phases, hp, pw, y, x, w, kh, kw, sh, sw, dh, dw, bias, R, 1, 0, 0xFFFF);
    const ptrdiff_t rem = ow - x;
    const __mmask16 tm = lanes_below(rem);
    if (rem > 8)
        block_generic(o + x, os, phases, hp, pw, y, x, w, kh, kw, sh, sw, dh, dw, bias, R, 1, 1, tm);
    else if (rem)
        block_generic(o + x, os, phases, hp, pw, y, x, w, kh, kw, sh, sw, dh, dw, bias, R, 0, 1, tm);
}

/* ---- out-of-line instances and dispatch ----------------------------------------------- */

/* One out-of-line instance per specialised shape, so each gets its own register allocation. */
#define DEF_SHIFT(name, KH, KW, SH, SW)                                                          \
    static __attribute__((noinline)) void name(float *out, ptrdiff_t os, ptrdiff_t oh,          \
                                               ptrdiff_t ow, const float *phases, ptrdiff_t hp,  \
                                               ptrdiff_t pw, const float *w, float bias)         \
    {                                                                                            \
        conv_shift(out, os, oh, ow, phases, hp, pw, w, bias, KH, KW, SH, SW);                    \
    }
DEF_SHIFT(shift_3x3s1, 3, 3, 1, 1)
DEF_SHIFT(shift_5x5s1, 5, 5, 1, 1)
DEF_SHIFT(shift_7x7s1, 7, 7, 1, 1)

#define DEF_PTR(name, KH, KW, SH, DH, RB, SPLIT)                                                 \
    static __attribute__((noinline)) void name(float *out, ptrdiff_t os, ptrdiff_t oh,          \
                                               ptrdiff_t ow, const float *const *cb,             \
                                               ptrdiff_t pw, const float *w, float bias)         \
    {                                                                                            \
        conv_ptr(out, os, oh, ow, cb, pw, w, bias, KH, KW, SH, DH, RB, SPLIT);                   \
    }
DEF_PTR(ptr_3x3s1, 3, 3, 1, 1, 4, 1)
DEF_PTR(ptr_3x3s2, 3, 3, 2, 1, 4, 1)
DEF_PTR(ptr_5x5s1, 5, 5, 1, 1, 4, 1)
DEF_PTR(ptr_5x5s2, 5, 5, 2, 1, 4, 1)
DEF_PTR(ptr_7x7s1, 7, 7, 1, 1, 4, 1)
DEF_PTR(ptr_7x7s2, 7, 7, 2, 1, 4, 1)
DEF_PTR(narrow_3x3s1, 3, 3, 1, 1, 8, 2)
DEF_PTR(narrow_3x3s2, 3, 3, 2, 1, 8, 2)

void im2row_dwconv__avx512(float *out, ptrdiff_t out_stride, ptrdiff_t oh, ptrdiff_t ow,
                           const float *phases, ptrdiff_t hp, ptrdiff_t phase_w,
                           const float *w, ptrdiff_t kh, ptrdiff_t kw,
                           ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw,
                           float bias)
{
    if (!dwconv_check_args(out, out_stride, oh, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw))
        return;

    if (dh == 1 && kh == kw && (kh == 3 || kh == 5 || kh == 7) && (sh == 1 || sh == 2)) {
        /* shift only at stride 1: at stride 2 every output row needs two fresh input rows
         * and the pointer path measured as fast (5x5 would also carry 18 phase rows) */
        const int three = kh == 3, s1 = sh == 1, shift = s1 && sw == 1 && dw == 1;
        /* narrow wins for <= 8 columns, and up to 16 unless the stride-1 shift path applies */
        const int narrow = three && (ow <= 8 || (ow <= 16 && !(shift && s1)));
        if (shift && !narrow) {
            (three ? shift_3x3s1 : kh == 5 ? shift_5x5s1 : shift_7x7s1)(out, out_stride, oh, ow, phases,
                                                                       hp, phase_w, w, bias);
            return;
        }
        const float *cb[7];
        for (ptrdiff_t j = 0; j < kw; j++)
            cb[j] = phases + dwconv_tap(j, hp, phase_w, sw, dw);
        if (narrow)
            (s1 ? narrow_3x3s1 : narrow_3x3s2)(out, out_stride, oh, ow, cb, phase_w, w, bias);
        else if (three)
            (s1 ? ptr_3x3s1 : ptr_3x3s2)(out, out_stride, oh, ow, cb, phase_w, w, bias);
        else if (kh == 5)
            (s1 ? ptr_5x5s1 : ptr_5x5s2)(out, out_stride, oh, ow, cb, phase_w, w, bias);
        else
            (s1 ? ptr_7x7s1 : ptr_7x7s2)(out, out_stride, oh, ow, cb, phase_w, w, bias);
        return;
    }

    ptrdiff_t y = 0;
    for (; y + GEN_R <= oh; y += GEN_R)
        rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, GEN_R);
    switch (oh - y) {
    case 3: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, 3); break;
    case 2: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, 2); break;
    case 1: rows_generic(out, out_stride, y, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw, bias, 1); break;
    default: break;
    }
}
#endif
