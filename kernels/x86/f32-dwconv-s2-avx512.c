/* f32-dwconv-s2, AVX-512 (F/BW/DQ/VL) variant.
 * Contract (im2row_kernels.h): stride-2 depthwise on the unpadded plane,
 *   out[y][x] = bias + sum_{i<kh, j<kw} w[i*kw+j] * in(2y - pad_top + i, 2x - pad_left + j),
 * taps outside the plane reading zero.
 *
 * Vectorised along output width (16 columns), blocks of R output rows sharing each input
 * row.  For 16 outputs from column x0 the taps of one input row read columns base + 2t + j
 * (base = 2*x0 - pad_left, t < 16, j < kw): three vectors A, B, C from base cover them, and
 * tap j is one two-source permute of A and B (even lanes at j = 0, odd at j = 1, ...) plus,
 * for its last lanes past A and B, a masked permute of C.  So the stride-2 phase split costs
 * kw permutes per input row and 16 columns instead of a copy of the plane.  Loads outside the
 * plane (padding columns, the ends of rows) are masked off, never accessed; rows outside it
 * are skipped (they add zero).  Taps accumulate in (i, j) order, as the scalar oracle's. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "im2row_kernels.h"
#include "dwconv-common.h"

#define AI static inline __attribute__((always_inline))

/* Lanes l with lo <= l < hi (clamped to 0..16). */
AI __mmask16 lanes_in(ptrdiff_t lo, ptrdiff_t hi)
{
    if (lo < 0) lo = 0;
    if (hi > 16) hi = 16;
    return hi <= lo ? (__mmask16)0 : (__mmask16)(((1u << (hi - lo)) - 1u) << lo);
}

/* R output rows from y0, 16 columns from x0 (store mask om). */
AI void block(float *out, ptrdiff_t os, ptrdiff_t y0, ptrdiff_t x0, const float *plane, ptrdiff_t height,
              ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left, const __m512 *wv, const float *w, float bias,
              const __m512i *idx, const __mmask16 *hi, __mmask16 om, const int KH, const int KW, const int R)
{
    const int NR = 2 * (R - 1) + KH;
    const ptrdiff_t base = 2 * x0 - pad_left;
    const __mmask16 ma = lanes_in(-base, width - base), mb = lanes_in(-base - 16, width - base - 16);
    const __mmask16 mc = KW > 2 ? lanes_in(-base - 32, width - base - 32) & lanes_in(0, KW - 2) : 0;
    __m512 acc[8];
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
        acc[t] = _mm512_set1_ps(bias);
#pragma GCC unroll 16
    for (int ir = 0; ir < NR; ir++) {
        const ptrdiff_t r = 2 * y0 - pad_top + ir;
        if (r < 0 || r >= height)
            continue;
        const float *row = plane + r * width + base;
        const __m512 a = _mm512_maskz_loadu_ps(ma, row), b = _mm512_maskz_loadu_ps(mb, row + 16);
        const __m512 c = KW > 2 ? _mm512_maskz_loadu_ps(mc, row + 32) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int j = 0; j < KW; j++) {
            __m512 tap = _mm512_permutex2var_ps(a, idx[j], b);
            if (j >= 2)
                tap = _mm512_mask_permutexvar_ps(tap, hi[j], idx[j], c);
#pragma GCC unroll 8
            for (int t = 0; t < R; t++) {
                const int i = ir - 2 * t;
                if (i >= 0 && i < KH)
                    acc[t] = _mm512_fmadd_ps(KH <= IM2ROW_DWCONV_S2_MAX_KW ? wv[i * KW + j] : _mm512_set1_ps(w[i * KW + j]), tap, acc[t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < R; t++)
        _mm512_mask_storeu_ps(out + (y0 + t) * os + x0, om, acc[t]);
}

AI void rows(float *out, ptrdiff_t os, ptrdiff_t y0, ptrdiff_t ow, const float *plane, ptrdiff_t height,
             ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left, const __m512 *wv, const float *w, float bias,
             const __m512i *idx, const __mmask16 *hi, const int KH, const int KW, const int R)
{
    for (ptrdiff_t x0 = 0; x0 < ow; x0 += 16)
        block(out, os, y0, x0, plane, height, width, pad_top, pad_left, wv, w, bias, idx, hi, lanes_in(0, ow - x0),
              KH, KW, R);
}

/* Blocks of 4 output rows (9 input rows at 3x3), then the 1-3 left. */
AI void conv(float *out, ptrdiff_t os, ptrdiff_t oh, ptrdiff_t ow, const float *plane, ptrdiff_t height,
             ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left, const float *w, float bias, const int KH,
             const int KW)
{
    /* the weights broadcast once, up to 7 x 7 (a kernel taller than that, only possible in
     * the runtime-taps instance, broadcasts from memory: no stack array sized by the kernel) */
    __m512 wv[IM2ROW_DWCONV_S2_MAX_KW * IM2ROW_DWCONV_S2_MAX_KW];
    if (KH <= IM2ROW_DWCONV_S2_MAX_KW)
        for (int k = 0; k < KH * KW; k++)
            wv[k] = _mm512_set1_ps(w[k]);
    __m512i idx[IM2ROW_DWCONV_S2_MAX_KW];
    __mmask16 hi[IM2ROW_DWCONV_S2_MAX_KW];
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int j = 0; j < KW; j++) {
        idx[j] = _mm512_add_epi32(even, _mm512_set1_epi32(j));
        hi[j] = lanes_in((32 - j + 1) / 2, 16);   /* lanes whose column 2t + j is past A and B */
    }
    ptrdiff_t y = 0;
    for (; y + 4 <= oh; y += 4)
        rows(out, os, y, ow, plane, height, width, pad_top, pad_left, wv, w, bias, idx, hi, KH, KW, 4);
    switch (oh - y) {
    case 3: rows(out, os, y, ow, plane, height, width, pad_top, pad_left, wv, w, bias, idx, hi, KH, KW, 3); break;
    case 2: rows(out, os, y, ow, plane, height, width, pad_top, pad_left, wv, w, bias, idx, hi, KH, KW, 2); break;
    case 1: rows(out, os, y, ow, plane, height, width, pad_top, pad_left, wv, w, bias, idx, hi, KH, KW, 1); break;
    default: break;
    }
}

DWCONV_S2_ENTRY(im2row_dwconv_s2__avx512)
#endif
