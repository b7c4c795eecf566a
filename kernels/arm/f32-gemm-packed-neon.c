/* f32-gemm-packed, AArch64 ASIMD + FMA (no SVE, no FP16, no dot product).
 *
 * Contract (kernels/include/im2row_kernels.h):
 *   C (m x n, element (i, j) at c[i*ldc + j*cs]) = [C +] A (m x k) @ B (k x n, row kk at b_rows[kk])
 *   A packed by im2row_pack_a with mr = im2row_gemm_mr__neon = 8:
 *     a_packed[(panel*k + kk)*8 + r] = A[panel*8 + r][kk], zero past row m.
 *   B and C are read in place; no alignment needed.  accumulate == 0 overwrites C.
 *   Requires m, n, k >= 1, cs >= 1, ldc >= (n-1)*cs + 1.  Never allocates; reads no float of A or B
 *   outside the packed panels / the k x n view, writes nothing outside the m x n view of C.
 *
 * Two register tiles, because B is not packed (32 q registers):
 *   n-vectorised  8 rows x 4*nv columns (nv <= 3, 24 accumulators): one B row is loaded as
 *                 vectors, the 8 A values of a k-step as two vectors used by lane (fmla .s[i]).
 *   m-vectorised  8*p rows x nc columns (nc <= 3): A k-steps are the vectors, B scalars the
 *                 multipliers; the tile is stored transposed.  Used for the n % 4 tail.
 * Blocking: k is cut into equal slices of at most KC so that an MC x KC block of A (128 KB)
 * stays in L2 while every column strip of B (KC x 12, 12 KB, from L1) streams past it.
 */
#if defined(__aarch64__)
#include <assert.h>
#include <stddef.h>
#include <arm_neon.h>

#include "im2row_kernels.h"

void im2row_gemm__neon(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
                       const float *const *b_rows, float *c, ptrdiff_t ldc, ptrdiff_t cs, int accumulate);
extern const ptrdiff_t im2row_gemm_mr__neon;

enum { MR = 8, KC = 256, MC = 128 };
const ptrdiff_t im2row_gemm_mr__neon = MR;

#define INLINE static inline __attribute__((always_inline))

/* One packed panel (8 rows) x NV vectors of 4 columns.  NV is a constant after inlining, so
 * the accumulator array lives in registers. */
INLINE void tile_n(ptrdiff_t kc, const float *restrict a, const float *const *restrict brows, ptrdiff_t col,
                   float *restrict c, ptrdiff_t ldc, ptrdiff_t rows, int acc, const int NV)
{
    float32x4_t vacc[8][3];
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) vacc[r][v] = vdupq_n_f32(0.0f);
    for (ptrdiff_t kk = 0; kk < kc; kk++) {
        const float *b = brows[kk] + col;
        const float32x4_t va0 = vld1q_f32(a);
        const float32x4_t va1 = vld1q_f32(a + 4);
        float32x4_t vb[3];
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) vb[v] = vld1q_f32(b + 4 * v);
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) {
            vacc[0][v] = vfmaq_laneq_f32(vacc[0][v], vb[v], va0, 0);
            vacc[1][v] = vfmaq_laneq_f32(vacc[1][v], vb[v], va0, 1);
            vacc[2][v] = vfmaq_laneq_f32(vacc[2][v], vb[v], va0, 2);
            vacc[3][v] = vfmaq_laneq_f32(vacc[3][v], vb[v], va0, 3);
            vacc[4][v] = vfmaq_laneq_f32(vacc[4][v], vb[v], va1, 0);
            vacc[5][v] = vfmaq_laneq_f32(vacc[5][v], vb[v], va1, 1);
            vacc[6][v] = vfmaq_laneq_f32(vacc[6][v], vb[v], va1, 2);
            vacc[7][v] = vfmaq_laneq_f32(vacc[7][v], vb[v], va1, 3);
        }
        a += MR;
    }
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) {
        if (r < rows) {
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) {
                float32x4_t x = vacc[r][v];
                if (acc) x = vaddq_f32(x, vld1q_f32(c + 4 * v));
                vst1q_f32(c + 4 * v, x);
            }
        }
        c += ldc;
    }
}

/* P panels (8*P rows, panel stride pstride) x NC columns; vacc[p][h][j] holds rows 4h..4h+3
 * of panel p in column j. */
INLINE void tile_m(ptrdiff_t kc, const float *restrict a, ptrdiff_t pstride, const float *const *restrict brows,
                   ptrdiff_t col, float *restrict c, ptrdiff_t ldc, ptrdiff_t cs, ptrdiff_t rows, int acc,
                   const int P, const int NC)
{
    float32x4_t vacc[4][2][3];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 3
        for (int j = 0; j < NC; j++) vacc[p][0][j] = vacc[p][1][j] = vdupq_n_f32(0.0f);
    for (ptrdiff_t kk = 0; kk < kc; kk++) {
        const float *b = brows[kk] + col;
        float32x4_t va[4][2];
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            va[p][0] = vld1q_f32(a + p * pstride);
            va[p][1] = vld1q_f32(a + p * pstride + 4);
        }
#pragma GCC unroll 3
        for (int j = 0; j < NC; j++) {
            const float bj = b[j];
#pragma GCC unroll 4
            for (int p = 0; p < P; p++) {
                vacc[p][0][j] = vfmaq_n_f32(vacc[p][0][j], va[p][0], bj);
                vacc[p][1][j] = vfmaq_n_f32(vacc[p][1][j], va[p][1], bj);
            }
        }
        a += MR;
    }
    float tmp[3][8];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
#pragma GCC unroll 3
        for (int j = 0; j < NC; j++) {
            vst1q_f32(tmp[j], vacc[p][0][j]);
            vst1q_f32(tmp[j] + 4, vacc[p][1][j]);
        }
        const ptrdiff_t rp = rows - 8 * p < 8 ? rows - 8 * p : 8;
        for (ptrdiff_t r = 0; r < rp; r++) {
            float *cr = c + (8 * p + r) * ldc;
#pragma GCC unroll 3
            for (int j = 0; j < NC; j++) cr[j * cs] = (acc ? cr[j * cs] : 0.0f) + tmp[j][r];
        }
    }
}

/* One column strip of nv vectors against the mc rows of the current A block. */
static void strip_n(ptrdiff_t mc, ptrdiff_t m_left, ptrdiff_t kc, ptrdiff_t k, const float *a,
                    const float *const *brows, ptrdiff_t col, float *c, ptrdiff_t ldc, int acc, int nv)
{
    for (ptrdiff_t i = 0; i < mc; i += MR) {
        const float *ap = a + i * k;
        switch (nv) {
        case 1: tile_n(kc, ap, brows, col, c + i * ldc, ldc, m_left - i, acc, 1); break;
        case 2: tile_n(kc, ap, brows, col, c + i * ldc, ldc, m_left - i, acc, 2); break;
        default: tile_n(kc, ap, brows, col, c + i * ldc, ldc, m_left - i, acc, 3); break;
        }
    }
}

#define TILE_M(P, NC) tile_m(kc, a + i * k, MR * k, brows, col, c + i * ldc, ldc, cs, m_left - i, acc, P, NC)

/* nc (<= 3) columns against the mc rows of the current A block. */
static void strip_m(ptrdiff_t mc, ptrdiff_t m_left, ptrdiff_t kc, ptrdiff_t k, const float *a,
                    const float *const *brows, ptrdiff_t col, float *c, ptrdiff_t ldc, ptrdiff_t cs, int acc, int nc)
{
    ptrdiff_t i = 0;
    /* 2 panels (4 vectors per column) keep 8-12 accumulators independent. */
    for (; i + 2 * MR <= mc; i += 2 * MR) {
        switch (nc) {
        case 1: TILE_M(2, 1); break;
        case 2: TILE_M(2, 2); break;
        default: TILE_M(2, 3); break;
        }
    }
    for (; i < mc; i += MR) {
        switch (nc) {
        case 1: TILE_M(1, 1); break;
        case 2: TILE_M(1, 2); break;
        default: TILE_M(1, 3); break;
        }
    }
}

void im2row_gemm__neon(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
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
    const ptrdiff_t n_vec = cs == 1 ? n & ~(ptrdiff_t)3 : 0;
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
                const ptrdiff_t left = (n_vec - j) / 4;
                const int nv = left == 1 ? 1 : (left == 2 || left == 4) ? 2 : 3;
                strip_n(mc, m - i0, kc, k, ablk, bk, j, cblk + j, ldc, acc, nv);
                j += 4 * nv;
            }
            while (j < n) {
                const int nc = n - j < 3 ? (int)(n - j) : 3;
                strip_m(mc, m - i0, kc, k, ablk, bk, j, cblk + j * cs, ldc, cs, acc, nc);
                j += nc;
            }
        }
    }
}
#endif
