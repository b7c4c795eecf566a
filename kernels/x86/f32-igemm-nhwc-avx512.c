/* f32-igemm-nhwc, AVX-512 (F + BW + DQ + VL, FMA).
 *
 * Contract (kernels/include/im2row_kernels.h):
 *   out[p*ldc + j] = bias[j] + sum_{t<ks, ch<kc} (a[p*ks + t] + a_offset)[ch] * W[t*kc + ch][j]
 *   weights packed by im2row_pack_igemm_nhwc with nr = im2row_igemm_nhwc_nr__avx512 = 32.
 *
 * Register tile: 12 pixels x 32 channels = 24 zmm accumulators (32 registers: 24 accumulate, 2
 * hold the weight row, broadcasts of the input take the rest); 12 input pointers stay in
 * general registers.  Each k step loads one packed weight row (two vectors) and broadcasts one
 * float per pixel: 14 loads per 24 FMAs.  12 rows measured 5-10% faster than 8 (16
 * accumulators, 10 loads per 16 FMAs) on a Sapphire Rapids-class core, where the weight row
 * comes from L1/L2 (tests/c/build_nhwc_kernels.sh bench).  Column tails of 1-16
 * use one vector; the last vector is stored under a mask, so nothing past n is written.
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"
#include "igemm-nhwc-common.h"

enum { VW = 16, MR = 12, NR = 32 };
const ptrdiff_t im2row_igemm_nhwc_mr__avx512 = MR;
const ptrdiff_t im2row_igemm_nhwc_nr__avx512 = NR;

/* R pixels (pointer rows of `a`, stride ks) x NV vectors of 16 columns, `cols` columns in all,
 * over taps x chans k steps; from the bias row, or from what c holds where bias is NULL. */
IGEMM_INLINE void tile(ptrdiff_t ks, ptrdiff_t taps, ptrdiff_t chans, const float *const *restrict a,
                       ptrdiff_t a_offset, const float *restrict bias, const float *restrict w,
                       float *restrict c, ptrdiff_t ldc, ptrdiff_t cols, const int R, const int NV)
{
    const __mmask16 mask = (__mmask16)(0xFFFFu >> (16 * NV - cols));
    __m512 acc[MR][2];
    if (bias != NULL) {
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            const __m512 b = _mm512_loadu_ps(bias + 16 * v);
#pragma GCC unroll 12
            for (int r = 0; r < R; r++) acc[r][v] = b;
        }
    } else {
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            if (NV == 2) acc[r][0] = _mm512_loadu_ps(c + r * ldc);
            acc[r][NV - 1] = _mm512_maskz_loadu_ps(mask, c + r * ldc + 16 * (NV - 1));
        }
    }
    for (ptrdiff_t t = 0; t < taps; t++) {
        const float *x[MR];
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) x[r] = a[r * ks + t] + a_offset;
        for (ptrdiff_t ch = 0; ch < chans; ch++, w += NR) {
            __m512 vb[2];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) vb[v] = _mm512_loadu_ps(w + 16 * v);
#pragma GCC unroll 12
            for (int r = 0; r < R; r++) {
                const __m512 va = _mm512_set1_ps(x[r][ch]);
#pragma GCC unroll 2
                for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(va, vb[v], acc[r][v]);
            }
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
        if (NV == 2) _mm512_storeu_ps(c + r * ldc, acc[r][0]);
        _mm512_mask_storeu_ps(c + r * ldc + 16 * (NV - 1), mask, acc[r][NV - 1]);
    }
}

IGEMM_NHWC_ENTRY(im2row_igemm_nhwc__avx512)
#endif
