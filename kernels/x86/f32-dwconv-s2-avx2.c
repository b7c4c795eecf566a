/* f32-dwconv-s2, AVX2 + FMA variant.
 * Contract (im2row_kernels.h): stride-2 depthwise on the unpadded plane,
 *   out[y][x] = bias + sum_{i<kh, j<kw} w[i*kw+j] * in(2y - pad_top + i, 2x - pad_left + j),
 * taps outside the plane reading zero.
 *
 * Vectorised along output width (8 columns), blocks of R output rows sharing each input row.
 * For 8 outputs from column x0, taps j and j + 1 (j even) of one input row read columns
 * base + j + 2t and base + j + 1 + 2t (base = 2*x0 - pad_left, t < 8): the even and odd lanes
 * of the 16 floats from base + j, one in-lane shuffle and one cross-lane permute each.  So
 * the stride-2 phase split costs two loads per tap pair and two shuffles per tap, per input
 * row and 8 columns, instead of a copy of the plane.  Loads outside the plane are masked
 * (maskload never touches masked-off lanes); rows outside it are skipped.  Taps accumulate in
 * (i, j) order, as the scalar oracle's. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "im2row_kernels.h"
#include "dwconv-common.h"

#define AI static inline __attribute__((always_inline))

/* Lanes l (0..7) with lo <= l < hi, as a maskload mask. */
AI __m256i lanes_in(ptrdiff_t lo, ptrdiff_t hi)
{
    const __m256i l = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    lo = lo < -1 ? -1 : lo > 8 ? 8 : lo;
    hi = hi < 0 ? 0 : hi > 9 ? 9 : hi;
    return _mm256_and_si256(_mm256_cmpgt_epi32(l, _mm256_set1_epi32((int)lo - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32((int)hi), l));
}

/* Even (ODD = 0) or odd lanes of the 16 floats lo:hi, in order. */
AI __m256 half(__m256 lo, __m256 hi, const int ODD)
{
    const __m256 t = ODD ? _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))
                         : _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

AI void block(float *out, ptrdiff_t os, ptrdiff_t y0, ptrdiff_t x0, const float *plane, ptrdiff_t height,
              ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left, const __m256 *wv, const float *w, float bias,
              ptrdiff_t ocols, const int KH, const int KW, const int R)
{
    const int NR = 2 * (R - 1) + KH, PAIRS = (KW + 1) / 2;
    const ptrdiff_t base = 2 * x0 - pad_left;
    __m256i m[2 * ((IM2ROW_DWCONV_S2_MAX_KW + 1) / 2)];
#pragma GCC unroll 8
    for (int q = 0; q < 2 * ((IM2ROW_DWCONV_S2_MAX_KW + 1) / 2); q++)  /* 8 floats from base + 2*(q/2) + 8*(q%2) */
        m[q] = lanes_in(-(base + 2 * (q / 2) + 8 * (q % 2)), width - (base + 2 * (q / 2) + 8 * (q % 2)));
    const __m256i om = lanes_in(0, ocols);
    __m256 acc[4];
#pragma GCC unroll 4
    for (int t = 0; t < R; t++)
        acc[t] = _mm256_set1_ps(bias);
#pragma GCC unroll 16
    for (int ir = 0; ir < NR; ir++) {
        const ptrdiff_t r = 2 * y0 - pad_top + ir;
        if (r < 0 || r >= height)
            continue;
        const float *row = plane + r * width + base;
#pragma GCC unroll 4
        for (int p = 0; p < PAIRS; p++) {
            const __m256 lo = _mm256_maskload_ps(row + 2 * p, m[2 * p]);
            const __m256 hi = _mm256_maskload_ps(row + 2 * p + 8, m[2 * p + 1]);
#pragma GCC unroll 2
            for (int odd = 0; odd < 2; odd++) {
                const int j = 2 * p + odd;
                if (j >= KW)
                    break;
                const __m256 tap = half(lo, hi, odd);
#pragma GCC unroll 4
                for (int t = 0; t < R; t++) {
                    const int i = ir - 2 * t;
                    if (i >= 0 && i < KH)
                        acc[t] = _mm256_fmadd_ps(KH <= IM2ROW_DWCONV_S2_MAX_KW ? wv[i * KW + j] : _mm256_set1_ps(w[i * KW + j]), tap, acc[t]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < R; t++) {
        float *o = out + (y0 + t) * os + x0;
        if (ocols >= 8)
            _mm256_storeu_ps(o, acc[t]);
        else
            _mm256_maskstore_ps(o, om, acc[t]);
    }
}

AI void rows(float *out, ptrdiff_t os, ptrdiff_t y0, ptrdiff_t ow, const float *plane, ptrdiff_t height,
             ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left, const __m256 *wv, const float *w, float bias,
             const int KH, const int KW, const int R)
{
    for (ptrdiff_t x0 = 0; x0 < ow; x0 += 8)
        block(out, os, y0, x0, plane, height, width, pad_top, pad_left, wv, w, bias, ow - x0, KH, KW, R);
}

AI void conv(float *out, ptrdiff_t os, ptrdiff_t oh, ptrdiff_t ow, const float *plane, ptrdiff_t height,
             ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left, const float *w, float bias, const int KH,
             const int KW)
{
    /* the weights broadcast once, up to 7 x 7 (a kernel taller than that, only possible in
     * the runtime-taps instance, broadcasts from memory: no stack array sized by the kernel) */
    __m256 wv[IM2ROW_DWCONV_S2_MAX_KW * IM2ROW_DWCONV_S2_MAX_KW];
    if (KH <= IM2ROW_DWCONV_S2_MAX_KW)
        for (int k = 0; k < KH * KW; k++)
            wv[k] = _mm256_set1_ps(w[k]);
    ptrdiff_t y = 0;
    for (; y + 4 <= oh; y += 4)
        rows(out, os, y, ow, plane, height, width, pad_top, pad_left, wv, w, bias, KH, KW, 4);
    switch (oh - y) {
    case 3: rows(out, os, y, ow, plane, height, width, pad_top, pad_left, wv, w, bias, KH, KW, 3); break;
    case 2: rows(out, os, y, ow, plane, height, width, pad_top, pad_left, wv, w, bias, KH, KW, 2); break;
    case 1: rows(out, os, y, ow, plane, height, width, pad_top, pad_left, wv, w, bias, KH, KW, 1); break;
    default: break;
    }
}

DWCONV_S2_ENTRY(im2row_dwconv_s2__avx2)
#endif
