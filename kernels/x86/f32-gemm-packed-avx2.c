/* f32-gemm-packed, AVX2 + FMA.
 *
 * Contract (kernels/include/im2row_kernels.h):
 *   C (m x n, element (i, j) at c[i*ldc + j*cs]) = [C +] A (m x k) @ B (k x n, row kk at b_rows[kk])
 *   A packed by im2row_pack_a with mr = im2row_gemm_mr__avx2 = 8:
 *     a_packed[(panel*k + kk)*8 + r] = A[panel*8 + r][kk], zero past row m.
 *   B and C are read in place; no alignment needed.  accumulate == 0 overwrites C.
 *   Requires m, n, k >= 1, cs >= 1, ldc >= (n-1)*cs + 1.  Never allocates; reads no float of A or B
 *   outside the packed panels / the k x n view, writes nothing outside the m x n view of C.
 *
 * Two register tiles, because B is not packed and n is often small (16 ymm registers):
 *   n-vectorised  4 rows x 8*nv columns (nv <= 3, 12 accumulators): one B row is loaded as
 *                 vectors, A scalars are broadcast.  Used for whole 8-column vectors.
 *   m-vectorised  8*p rows x nc columns (nc <= 6): one packed A k-step is exactly one ymm
 *                 (8 rows), B scalars are broadcast; the tile is stored transposed.  Used for
 *                 the n % 8 tail, so no masked loads or stores are needed anywhere.
 * Blocking: k is cut into equal slices of at most KC so that an MC x KC block of A (512 KB)
 * stays in L2 while every column strip of B streams past it (KC = 512, MC = 256 measured best
 * on Zen 5, 1 MB L2).
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <assert.h>
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"

void im2row_gemm__avx2(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
                       const float *const *b_rows, float *c, ptrdiff_t ldc, ptrdiff_t cs, int accumulate);
extern const ptrdiff_t im2row_gemm_mr__avx2;

enum { MR = 8, KC = 512, MC = 256 };
const ptrdiff_t im2row_gemm_mr__avx2 = MR;

#define INLINE static inline __attribute__((always_inline))

/* R rows (of one packed panel, starting at `a`) x NV vectors of 8 columns.  R and NV are
 * constants after inlining, so the accumulator arrays live in registers. */
INLINE void tile_n(ptrdiff_t kc, const float *restrict a, const float *const *restrict brows, ptrdiff_t col,
                   float *restrict c, ptrdiff_t ldc, ptrdiff_t rows, int acc, const int R, const int NV)
{
    __m256 vacc[8][3];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) vacc[r][v] = _mm256_setzero_ps();
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
INLINE void tile_m(ptrdiff_t kc, const float *restrict a, ptrdiff_t pstride, const float *const *restrict brows,
                   ptrdiff_t col, float *restrict c, ptrdiff_t ldc, ptrdiff_t cs, ptrdiff_t rows, int acc,
                   const int P, const int NC)
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
    /* Transposing through the stack costs 8*NC scalar updates per KC*NC*P FMAs: a few %. */
    float tmp[6][8];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
#pragma GCC unroll 6
        for (int j = 0; j < NC; j++) _mm256_storeu_ps(tmp[j], vacc[p][j]);
        const ptrdiff_t rp = rows - 8 * p < 8 ? rows - 8 * p : 8;
        for (ptrdiff_t r = 0; r < rp; r++) {
            float *cr = c + (8 * p + r) * ldc;
#pragma GCC unroll 6
            for (int j = 0; j < NC; j++) cr[j * cs] = (acc ? cr[j * cs] : 0.0f) + tmp[j][r];
        }
    }
}

/* One column strip of nv vectors against the mc rows of the current A block. */
static void strip_n(ptrdiff_t mc, ptrdiff_t m_left, ptrdiff_t kc, ptrdiff_t k, const float *a,
                    const float *const *brows, ptrdiff_t col, float *c, ptrdiff_t ldc, int acc, int nv)
{
    if (nv == 1) {
        /* 4 x 8 would leave only 4 accumulators: too few to hide the FMA latency. */
        for (ptrdiff_t i = 0; i < mc; i += MR)
            tile_n(kc, a + i * k, brows, col, c + i * ldc, ldc, m_left - i, acc, 8, 1);
        return;
    }
    for (ptrdiff_t i = 0; i < mc; i += 4) {
        const float *ap = a + (i / MR) * MR * k + i % MR;
        if (nv == 2)
            tile_n(kc, ap, brows, col, c + i * ldc, ldc, m_left - i, acc, 4, 2);
        else
            tile_n(kc, ap, brows, col, c + i * ldc, ldc, m_left - i, acc, 4, 3);
    }
}

#define TILE_M(P, NC) tile_m(kc, a + i * k, MR * k, brows, col, c + i * ldc, ldc, cs, m_left - i, acc, P, NC)
#define TILE_M_NC(P)                                                                     \
    switch (nc) {                                                                        \
    case 1: TILE_M(P, 1); break; case 2: TILE_M(P, 2); break; case 3: TILE_M(P, 3); break; \
    case 4: TILE_M(P, 4); break; case 5: TILE_M(P, 5); break; default: TILE_M(P, 6); break; \
    }

/* nc (<= 6) columns against the mc rows of the current A block. */
static void strip_m(ptrdiff_t mc, ptrdiff_t m_left, ptrdiff_t kc, ptrdiff_t k, const float *a,
                    const float *const *brows, ptrdiff_t col, float *c, ptrdiff_t ldc, ptrdiff_t cs, int acc, int nc)
{
    ptrdiff_t i = 0;
    if (nc <= 2) {
        /* 4 panels so that 1-2 columns still give 4-8 independent accumulators. */
        for (; i + 4 * MR <= mc; i += 4 * MR) {
            if (nc == 1) TILE_M(4, 1);
            else TILE_M(4, 2);
        }
    }
    for (; i + 2 * MR <= mc; i += 2 * MR) TILE_M_NC(2)
    for (; i < mc; i += MR) TILE_M_NC(1)
}

void im2row_gemm__avx2(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
                       const float *const *b_rows, float *c, ptrdiff_t ldc, ptrdiff_t cs, int accumulate)
{
    assert(m >= 1);
    assert(n >= 1);
    assert(k >= 1);
    assert(a_packed != NULL);
    assert(b_rows != NULL);
    assert(c != NULL);
    assert(cs >= 1);
    assert(ldc >= (n - 1) * cs + 1);

    /* Strided C columns go through the m-vectorised tile, which stores element by element. */
    const ptrdiff_t n_vec = cs == 1 ? n & ~(ptrdiff_t)7 : 0;
    /* Equal slices: no short last slice paying a full round trip of C for little work. */
    const ptrdiff_t slices = (k + KC - 1) / KC;
    const ptrdiff_t kc_max = (k + slices - 1) / slices;
    for (ptrdiff_t k0 = 0; k0 < k; k0 += kc_max) {
        const ptrdiff_t kc = k - k0 < kc_max ? k - k0 : kc_max;
        const int acc = accumulate || k0 != 0;
        const float *const *bk = b_rows + k0;
        for (ptrdiff_t i0 = 0; i0 < m; i0 += MC) {
            const ptrdiff_t mc = m - i0 < MC ? m - i0 : MC;
            const float *ablk = a_packed + i0 * k + k0 * MR;
            float *cblk = c + i0 * ldc;
            ptrdiff_t j = 0;
            while (j < n_vec) {
                /* Strips of 3 vectors, 2 where 3 would leave a lone vector (4 = 2 + 2). */
                const ptrdiff_t left = (n_vec - j) / 8;
                const int nv = left == 1 ? 1 : (left == 2 || left == 4) ? 2 : 3;
                strip_n(mc, m - i0, kc, k, ablk, bk, j, cblk + j, ldc, acc, nv);
                j += 8 * nv;
            }
            while (j < n) {
                /* 7 columns go as 4 + 3: 2 x 7 accumulators do not fit in 16 registers. */
                const int nc = n - j <= 6 ? (int)(n - j) : 4;
                strip_m(mc, m - i0, kc, k, ablk, bk, j, cblk + j * cs, ldc, cs, acc, nc);
                j += nc;
            }
        }
    }
}
#endif
