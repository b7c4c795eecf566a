/* f32-gemm-packed, AVX-512 (F + BW + DQ + VL, FMA).
 *
 * Contract (kernels/include/im2row_kernels.h):
 *   C (m x n, element (i, j) at c[i*ldc + j*cs]) = [C +] A (m x k) @ B (k x n, row kk at b_rows[kk])
 *   A packed by im2row_pack_a with mr = im2row_gemm_mr__avx512 = 16:
 *     a_packed[(panel*k + kk)*16 + r] = A[panel*16 + r][kk], zero past row m.
 *   B and C are read in place; no alignment needed.  accumulate == 0 overwrites C.
 *   Requires m, n, k >= 1, cs >= 1, ldc >= (n-1)*cs + 1.  Never allocates; reads no float of A or B
 *   outside the packed panels / the k x n view, writes nothing outside the m x n view of C.
 *
 * Two register tiles, because B is not packed and n is often small:
 *   n-vectorised  8 rows x 16*nv columns (nv <= 3, 24 accumulators): one B row is loaded as
 *                 vectors, A scalars are broadcast.  Used for whole 16-column vectors.
 *   m-vectorised  16*p rows x nc columns (nc <= 12): one packed A k-step is exactly one zmm
 *                 (16 rows), B scalars are broadcast; the tile is stored transposed.  Used for
 *                 the n % 16 tail and for n < 16, where the n-vectorised tile would waste lanes.
 * Blocking: k is cut into equal slices of at most KC so that an MC x KC block of A (512 KB)
 * stays in L2 while every column strip of B streams past it (B from L2 is fast enough here;
 * a 1 MB L2 and full-width FMA on Zen 5 measured best with KC = 512, MC = 256).
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <assert.h>
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"

void im2row_gemm__avx512(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
                         const float *const *b_rows, float *c, ptrdiff_t ldc, ptrdiff_t cs, int accumulate);
extern const ptrdiff_t im2row_gemm_mr__avx512;

enum { MR = 16, KC = 512, MC = 256 };
const ptrdiff_t im2row_gemm_mr__avx512 = MR;

#define INLINE static inline __attribute__((always_inline))

/* R rows (of one packed panel, starting at `a`) x NV vectors of 16 columns; the last vector is
 * loaded and stored under `mask`.  R and NV are constants after inlining, so the accumulator
 * arrays live in registers. */
INLINE void tile_n(ptrdiff_t kc, const float *restrict a, const float *const *restrict brows, ptrdiff_t col,
                   float *restrict c, ptrdiff_t ldc, ptrdiff_t rows, int acc, __mmask16 mask,
                   const int R, const int NV)
{
    __m512 vacc[16][3];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) vacc[r][v] = _mm512_setzero_ps();
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
INLINE void tile_m(ptrdiff_t kc, const float *restrict a, ptrdiff_t pstride, const float *const *restrict brows,
                   ptrdiff_t col, float *restrict c, ptrdiff_t ldc, ptrdiff_t cs, ptrdiff_t rows, int acc,
                   const int P, const int NC)
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
    /* Transposing through the stack costs 16*NC scalar updates per KC*NC*P FMAs: a few %. */
    float tmp[12][16];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
#pragma GCC unroll 12
        for (int j = 0; j < NC; j++) _mm512_storeu_ps(tmp[j], vacc[p][j]);
        const ptrdiff_t rp = rows - 16 * p < 16 ? rows - 16 * p : 16;
        for (ptrdiff_t r = 0; r < rp; r++) {
            float *cr = c + (16 * p + r) * ldc;
#pragma GCC unroll 12
            for (int j = 0; j < NC; j++) cr[j * cs] = (acc ? cr[j * cs] : 0.0f) + tmp[j][r];
        }
    }
}

/* One column strip of nv vectors against the mc rows of the current A block. */
static void strip_n(ptrdiff_t mc, ptrdiff_t m_left, ptrdiff_t kc, ptrdiff_t k, const float *a,
                    const float *const *brows, ptrdiff_t col, float *c, ptrdiff_t ldc, int acc, __mmask16 mask,
                    int nv)
{
    if (nv == 1) {
        /* 8 x 16 would leave only 8 accumulators: too few to hide the FMA latency. */
        for (ptrdiff_t i = 0; i < mc; i += MR)
            tile_n(kc, a + i * k, brows, col, c + i * ldc, ldc, m_left - i, acc, mask, 16, 1);
        return;
    }
    for (ptrdiff_t i = 0; i < mc; i += 8) {
        const float *ap = a + (i / MR) * MR * k + i % MR;
        if (nv == 2)
            tile_n(kc, ap, brows, col, c + i * ldc, ldc, m_left - i, acc, mask, 8, 2);
        else
            tile_n(kc, ap, brows, col, c + i * ldc, ldc, m_left - i, acc, mask, 8, 3);
    }
}

#define TILE_M(P, NC) tile_m(kc, a + i * k, MR * k, brows, col, c + i * ldc, ldc, cs, m_left - i, acc, P, NC)
#define TILE_M_NC(P)                                                                       \
    switch (nc) {                                                                          \
    case 1: TILE_M(P, 1); break;   case 2: TILE_M(P, 2); break;   case 3: TILE_M(P, 3); break;   \
    case 4: TILE_M(P, 4); break;   case 5: TILE_M(P, 5); break;   case 6: TILE_M(P, 6); break;   \
    case 7: TILE_M(P, 7); break;   case 8: TILE_M(P, 8); break;   case 9: TILE_M(P, 9); break;   \
    case 10: TILE_M(P, 10); break; case 11: TILE_M(P, 11); break; default: TILE_M(P, 12); break; \
    }

/* nc (<= 12) columns against the mc rows of the current A block. */
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

void im2row_gemm__avx512(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
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

    /* A tail of 13-15 columns fills a masked vector well enough; a shorter one (or all of n
     * below 16) goes to the m-vectorised tile. */
    const ptrdiff_t tail = n % 16;
    /* Strided C columns go through the m-vectorised tile, which stores element by element. */
    const ptrdiff_t n_vec = cs != 1 ? 0 : (n < 16 || tail <= 12) ? n - tail : n;
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
                const ptrdiff_t left = (n_vec - j + 15) / 16;
                const int nv = left == 1 ? 1 : (left == 2 || left == 4) ? 2 : 3;
                const ptrdiff_t w = n_vec - j < 16 * nv ? n_vec - j : 16 * nv;
                const __mmask16 mask = (__mmask16)(0xFFFFu >> (16 * nv - w));
                strip_n(mc, m - i0, kc, k, ablk, bk, j, cblk + j, ldc, acc, mask, nv);
                j += w;
            }
            while (j < n) {
                /* Strips of 12; 13-24 left split in two halves (13-15 is the only case when
                 * C columns are contiguous and n < 16). */
                const ptrdiff_t left = n - j;
                const int nc = left <= 12 ? (int)left : left <= 24 ? (int)(left + 1) / 2 : 12;
                strip_m(mc, m - i0, kc, k, ablk, bk, j, cblk + j * cs, ldc, cs, acc, nc);
                j += nc;
            }
        }
    }
}
#endif
