/* f32-igemm-nhwc, AVX2 + FMA.
 *
 * Contract (kernels/include/im2row_kernels.h):
 *   out[p*ldc + j] = bias[j] + sum_{t<ks, ch<kc} (a[p*ks + t] + a_offset)[ch] * W[t*kc + ch][j]
 *   weights packed by im2row_pack_igemm_nhwc with nr = im2row_igemm_nhwc_nr__avx2 = 16.
 *
 * Register tile: 6 pixels x 16 channels = 12 ymm accumulators + 2 for the weight row + 1
 * broadcast (16 registers), the usual AVX2 6x16 shape: 12 independent FMAs cover a 4-5 cycle
 * latency on two ports.  Column tails of 1-8 use one vector; the last vector is stored under a
 * mask, so nothing past n is written.
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"
#include "igemm-nhwc-common.h"

enum { VW = 8, MR = 6, NR = 16 };
const ptrdiff_t im2row_igemm_nhwc_mr__avx2 = MR;
const ptrdiff_t im2row_igemm_nhwc_nr__avx2 = NR;

IGEMM_INLINE __m256i lanes_below(ptrdiff_t n)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}

/* R pixels (pointer rows of `a`, stride ks) x NV vectors of 8 columns, `cols` columns in all,
 * over taps x chans k steps; from the bias row, or from what c holds where bias is NULL. */
IGEMM_INLINE void tile(ptrdiff_t ks, ptrdiff_t taps, ptrdiff_t chans, const float *const *restrict a,
                       ptrdiff_t a_offset, const float *restrict bias, const float *restrict w,
                       float *restrict c, ptrdiff_t ldc, ptrdiff_t cols, const int R, const int NV)
{
    const ptrdiff_t last = cols - 8 * (NV - 1);
    const __m256i mask = lanes_below(last);
    __m256 acc[MR][2];
    if (bias != NULL) {
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            const __m256 b = _mm256_loadu_ps(bias + 8 * v);
#pragma GCC unroll 6
            for (int r = 0; r < R; r++) acc[r][v] = b;
        }
    } else {
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            if (NV == 2) acc[r][0] = _mm256_loadu_ps(c + r * ldc);
            acc[r][NV - 1] = last == 8 ? _mm256_loadu_ps(c + r * ldc + 8 * (NV - 1))
                                       : _mm256_maskload_ps(c + r * ldc + 8 * (NV - 1), mask);
        }
    }
    for (ptrdiff_t t = 0; t < taps; t++) {
        const float *x[MR];
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) x[r] = a[r * ks + t] + a_offset;
        for (ptrdiff_t ch = 0; ch < chans; ch++, w += NR) {
            __m256 vb[2];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) vb[v] = _mm256_loadu_ps(w + 8 * v);
#pragma GCC unroll 6
            for (int r = 0; r < R; r++) {
                const __m256 va = _mm256_broadcast_ss(x[r] + ch);
#pragma GCC unroll 2
                for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(va, vb[v], acc[r][v]);
            }
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        if (NV == 2) _mm256_storeu_ps(c + r * ldc, acc[r][0]);
        if (last == 8) _mm256_storeu_ps(c + r * ldc + 8 * (NV - 1), acc[r][NV - 1]);
        else _mm256_maskstore_ps(c + r * ldc + 8 * (NV - 1), mask, acc[r][NV - 1]);
    }
}

IGEMM_NHWC_ENTRY(im2row_igemm_nhwc__avx2)
#endif
