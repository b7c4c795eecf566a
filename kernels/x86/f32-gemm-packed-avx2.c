/* f32-gemm-packed, AVX2 + FMA.
 *
 * Contract (kernels/include/im2row_kernels.h):
 *   C (m x n, element (i, j) at c[i*ldc + j*cs]) = [C +] A (m x k) @ B (k x n, row kk at b_rows[kk])
 *   A packed by im2row_pack_a with mr = im2row_gemm_mr__avx2 = 8:
 *     a_packed[(panel*k + kk)*8 + r] = A[panel*8 + r][kk], zero past row m.
 *   C is written in place; B is read in place, or strip by strip copied into `work` (see the
 *   blocking below); no alignment needed.  accumulate == 0 overwrites C; bias
 *   (m floats or NULL) starts the accumulators of the first k slice.
 *   Requires m, n, k >= 1, cs >= 1, ldc >= (n-1)*cs + 1.  Never allocates; reads no float of A or B
 *   outside the packed panels / the k x n view, writes nothing outside the m x n view of C.
 *
 * Two register tiles, because n is often small (16 ymm registers):
 *   n-vectorised  4 rows x 8*nv columns (nv <= 3, 12 accumulators): one B row is loaded as
 *                 vectors, A scalars are broadcast.  Used for whole 8-column vectors.
 *   m-vectorised  8*p rows x nc columns (nc <= 6): one packed A k-step is exactly one ymm
 *                 (8 rows), B scalars are broadcast; the tile is stored transposed.  Used for
 *                 the n % 8 tail, so no masked loads or stores are needed anywhere.
 * 12 accumulators + 3 B vectors + 1 broadcast fill the 16 registers; 12 independent FMAs per k
 * step cover 4-cycle latency x 2 pipes; 3 loads + 4 broadcasts per 12 FMAs fit 2 loads/cycle.
 * Blocking (gemm-packed-driver.inc, gemm-blocking.c): from the host's caches at run time; a
 * kc x 24 B strip is copied once per A block and streams from L1.
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"
#include "gemm-packed-common.h"

#define GEMM_FN im2row_gemm__avx2
#define GEMM_MR_VAR im2row_gemm_mr__avx2
#define GEMM_TILE_VAR im2row_gemm_tile__avx2
enum { MR = 8, VW = 8, NV_ROWS = 4, M_NR = 6 };
#define GEMM_M_QUAD 1

/* R rows (of one packed panel, starting at `a`) x NV vectors of 8 columns (w = 8*NV). */
GEMM_INLINE void tile_n(ptrdiff_t kc, const float *restrict a, const float *const *restrict brows, ptrdiff_t col,
                        float *restrict c, ptrdiff_t ldc, ptrdiff_t rows, int acc, const float *bias, ptrdiff_t w, const int R,
                        const int NV)
{
    (void)w;
    __m256 vacc[8][3];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const __m256 b0 = bias != NULL && r < rows ? _mm256_set1_ps(bias[r]) : _mm256_setzero_ps();
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) vacc[r][v] = b0;
    }
    for (ptrdiff_t kk = 0; kk < kc; kk++) {
        const float *b = brows[kk] + col;
        __m256 vb[3];
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) vb[v] = _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m256 va = _mm256_broadcast_ss(a + r);
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) vacc[r][v] = _mm256_fmadd_ps(va, vb[v], vacc[r][v]);
        }
        a += MR;
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (r < rows) {
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) {
                __m256 x = vacc[r][v];
                if (acc) x = _mm256_add_ps(x, _mm256_loadu_ps(c + 8 * v));
                _mm256_storeu_ps(c + 8 * v, x);
            }
        }
        c += ldc;
    }
}

/* P panels (8*P rows, panel stride pstride) x NC columns; vacc[p][j] holds column j. */
GEMM_INLINE void tile_m(ptrdiff_t kc, const float *restrict a, ptrdiff_t pstride, const float *const *restrict brows,
                        ptrdiff_t col, float *restrict c, ptrdiff_t ldc, ptrdiff_t cs, ptrdiff_t rows, int acc,
                        const float *bias, const int P, const int NC)
{
    __m256 vacc[4][6];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 6
        for (int j = 0; j < NC; j++) vacc[p][j] = _mm256_setzero_ps();
    for (ptrdiff_t kk = 0; kk < kc; kk++) {
        const float *b = brows[kk] + col;
        __m256 va[4];
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) va[p] = _mm256_loadu_ps(a + p * pstride);
#pragma GCC unroll 6
        for (int j = 0; j < NC; j++) {
            const __m256 vb = _mm256_broadcast_ss(b + j);
#pragma GCC unroll 4
            for (int p = 0; p < P; p++) vacc[p][j] = _mm256_fmadd_ps(va[p], vb, vacc[p][j]);
        }
        a += MR;
    }
    /* Transposing through the stack costs 8*NC scalar updates per kc*NC*P FMAs: a few %. */
    float tmp[6][8];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
#pragma GCC unroll 6
        for (int j = 0; j < NC; j++) _mm256_storeu_ps(tmp[j], vacc[p][j]);
        GEMM_STORE_TRANSPOSED(c, ldc, cs, rows, acc, bias, tmp, p, 8, NC);
    }
}

/* Whole 8-column vectors: the n % 8 tail goes to the m-vectorised tile, so no masks anywhere. */
static inline ptrdiff_t vec_cols(ptrdiff_t n) { return n & ~(ptrdiff_t)7; }

/* 7 columns go as 4 + 3: 2 x 7 accumulators do not fit in 16 registers. */
static inline int m_strip_cols(ptrdiff_t left) { return left <= 6 ? (int)left : 4; }

#define TILE_M_NC(P)                                                                     \
    switch (nc) {                                                                        \
    case 1: TILE_M(P, 1); break; case 2: TILE_M(P, 2); break; case 3: TILE_M(P, 3); break; \
    case 4: TILE_M(P, 4); break; case 5: TILE_M(P, 5); break; default: TILE_M(P, 6); break; \
    }

#include "gemm-packed-driver.inc"
#endif
