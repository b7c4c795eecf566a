/* f32-gemm-packed, AVX-512 (F + BW + DQ + VL, FMA).
 *
 * Contract (kernels/include/im2row_kernels.h):
 *   C (m x n, element (i, j) at c[i*ldc + j*cs]) = [C +] A (m x k) @ B (k x n, row kk at b_rows[kk])
 *   A packed by im2row_pack_a with mr = im2row_gemm_mr__avx512 = 16:
 *     a_packed[(panel*k + kk)*16 + r] = A[panel*16 + r][kk], zero past row m.
 *   C is written in place; B is read in place, or strip by strip copied into `work` (see the
 *   blocking below); no alignment needed.  accumulate == 0 overwrites C; bias
 *   (m floats or NULL) starts the accumulators of the first k slice.
 *   Requires m, n, k >= 1, cs >= 1, ldc >= (n-1)*cs + 1.  Never allocates; reads no float of A or B
 *   outside the packed panels / the k x n view, writes nothing outside the m x n view of C.
 *
 * Two register tiles, because n is often small (32 zmm registers):
 *   n-vectorised  8 rows x 16*nv columns (nv <= 3, 24 accumulators): one B row is loaded as
 *                 vectors, A scalars are broadcast.  Used for whole 16-column vectors.
 *   m-vectorised  16*p rows x nc columns (nc <= 12): one packed A k-step is exactly one zmm
 *                 (16 rows), B scalars are broadcast; the tile is stored transposed.  Used for
 *                 the n % 16 tail and for n < 16, where the n-vectorised tile would waste lanes.
 * 24 accumulators cover 4-cycle FMA latency x 2 pipes three times over; per k step the 8 x 48
 * tile issues 3 B loads + 8 broadcasts for 24 FMAs, well within 2-3 loads per cycle.
 * Blocking (gemm-packed-driver.inc, gemm-blocking.c): from the host's caches at run time; a
 * kc x 48 B strip is copied once per A block and streams from L1.
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"
#include "gemm-packed-common.h"

#define GEMM_FN im2row_gemm__avx512
#define GEMM_MR_VAR im2row_gemm_mr__avx512
#define GEMM_TILE_VAR im2row_gemm_tile__avx512
enum { MR = 16, VW = 16, NV_ROWS = 8, M_NR = 12 };
#define GEMM_M_QUAD 1

/* R rows (of one packed panel, starting at `a`) x NV vectors of 16 columns, w columns in all:
 * the last vector is loaded and stored under a mask. */
GEMM_INLINE void tile_n(ptrdiff_t kc, const float *restrict a, const float *const *restrict brows, ptrdiff_t col,
                        float *restrict c, ptrdiff_t ldc, ptrdiff_t rows, int acc, const float *bias, ptrdiff_t w, const int R,
                        const int NV)
{
    const __mmask16 mask = (__mmask16)(0xFFFFu >> (16 * NV - w));
    __m512 vacc[16][3];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        const __m512 b0 = bias != NULL && r < rows ? _mm512_set1_ps(bias[r]) : _mm512_setzero_ps();
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) vacc[r][v] = b0;
    }
    for (ptrdiff_t kk = 0; kk < kc; kk++) {
        const float *b = brows[kk] + col;
        __m512 vb[3];
#pragma GCC unroll 3
        for (int v = 0; v < NV - 1; v++) vb[v] = _mm512_loadu_ps(b + 16 * v);
        vb[NV - 1] = _mm512_maskz_loadu_ps(mask, b + 16 * (NV - 1));
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            const __m512 va = _mm512_set1_ps(a[r]);
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) vacc[r][v] = _mm512_fmadd_ps(va, vb[v], vacc[r][v]);
        }
        a += MR;
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        if (r < rows) {
#pragma GCC unroll 3
            for (int v = 0; v < NV - 1; v++) {
                __m512 x = vacc[r][v];
                if (acc) x = _mm512_add_ps(x, _mm512_loadu_ps(c + 16 * v));
                _mm512_storeu_ps(c + 16 * v, x);
            }
            __m512 x = vacc[r][NV - 1];
            if (acc) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, c + 16 * (NV - 1)));
            _mm512_mask_storeu_ps(c + 16 * (NV - 1), mask, x);
        }
        c += ldc;
    }
}

/* P panels (16*P rows, panel stride pstride) x NC columns; vacc[p][j] holds column j. */
GEMM_INLINE void tile_m(ptrdiff_t kc, const float *restrict a, ptrdiff_t pstride, const float *const *restrict brows,
                        ptrdiff_t col, float *restrict c, ptrdiff_t ldc, ptrdiff_t cs, ptrdiff_t rows, int acc,
                        const float *bias, const int P, const int NC)
{
    __m512 vacc[4][12];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 12
        for (int j = 0; j < NC; j++) vacc[p][j] = _mm512_setzero_ps();
    for (ptrdiff_t kk = 0; kk < kc; kk++) {
        const float *b = brows[kk] + col;
        __m512 va[4];
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) va[p] = _mm512_loadu_ps(a + p * pstride);
#pragma GCC unroll 12
        for (int j = 0; j < NC; j++) {
            const __m512 vb = _mm512_set1_ps(b[j]);
#pragma GCC unroll 4
            for (int p = 0; p < P; p++) vacc[p][j] = _mm512_fmadd_ps(va[p], vb, vacc[p][j]);
        }
        a += MR;
    }
    /* Transposing through the stack costs 16*NC scalar updates per kc*NC*P FMAs: a few %. */
    float tmp[12][16];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
#pragma GCC unroll 12
        for (int j = 0; j < NC; j++) _mm512_storeu_ps(tmp[j], vacc[p][j]);
        GEMM_STORE_TRANSPOSED(c, ldc, cs, rows, acc, bias, tmp, p, 16, NC);
    }
}

/* Whole 16-column vectors; a tail of 13-15 columns fills a masked vector well enough, a shorter
 * one (or all of n below 16) goes to the m-vectorised tile. */
static inline ptrdiff_t vec_cols(ptrdiff_t n)
{
    const ptrdiff_t tail = n % 16;
    return (n < 16 || tail <= 12) ? n - tail : n;
}

/* Strips of 12; 13-24 left split in two halves (13-15 is the only case when C columns are
 * contiguous and n < 16). */
static inline int m_strip_cols(ptrdiff_t left)
{
    return left <= 12 ? (int)left : left <= 24 ? (int)(left + 1) / 2 : 12;
}

#define TILE_M_NC(P)                                                                       \
    switch (nc) {                                                                          \
    case 1: TILE_M(P, 1); break;   case 2: TILE_M(P, 2); break;   case 3: TILE_M(P, 3); break;   \
    case 4: TILE_M(P, 4); break;   case 5: TILE_M(P, 5); break;   case 6: TILE_M(P, 6); break;   \
    case 7: TILE_M(P, 7); break;   case 8: TILE_M(P, 8); break;   case 9: TILE_M(P, 9); break;   \
    case 10: TILE_M(P, 10); break; case 11: TILE_M(P, 11); break; default: TILE_M(P, 12); break; \
    }

#include "gemm-packed-driver.inc"
#endif
