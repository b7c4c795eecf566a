/* f32-gemm-packed, AArch64 ASIMD + FMA (no SVE, no FP16, no dot product).
 *
 * Contract (kernels/include/im2row_kernels.h):
 *   C (m x n, element (i, j) at c[i*ldc + j*cs]) = [C +] A (m x k) @ B (k x n, row kk at b_rows[kk])
 *   A packed by im2row_pack_a with mr = im2row_gemm_mr__neon = 8:
 *     a_packed[(panel*k + kk)*8 + r] = A[panel*8 + r][kk], zero past row m.
 *   C is written in place; B is read in place, or strip by strip copied into `work` (see the
 *   blocking below); no alignment needed.  accumulate == 0 overwrites C; bias
 *   (m floats or NULL) starts the accumulators of the first k slice.
 *   Requires m, n, k >= 1, cs >= 1, ldc >= (n-1)*cs + 1.  Never allocates; reads no float of A or B
 *   outside the packed panels / the k x n view, writes nothing outside the m x n view of C.
 *
 * Two register tiles (32 q registers):
 *   n-vectorised  8 rows x 4*nv columns (nv <= 3, 24 accumulators): one B row is loaded as
 *                 vectors, the 8 A values of a k-step as two vectors used by lane (fmla .s[i]).
 *   m-vectorised  8*p rows x nc columns (nc <= 3): A k-steps are the vectors, B scalars the
 *                 multipliers; the tile is stored transposed.  Used for the n % 4 tail.
 * 24 accumulators + 2 A + 3 B vectors = 29 of 32 registers.
 * Blocking (gemm-packed-driver.inc, gemm-blocking.c): from the host's caches at run time, the
 * same model as on x86; a kc x 12 B strip is copied once per A block and streams from L1.
 */
#if defined(__aarch64__)
#include <stddef.h>
#include <arm_neon.h>

#include "im2row_kernels.h"
#include "gemm-packed-common.h"

#define GEMM_FN im2row_gemm__neon
#define GEMM_MR_VAR im2row_gemm_mr__neon
#define GEMM_TILE_VAR im2row_gemm_tile__neon
/* The n-vectorised tile always covers the whole 8-row panel (lane FMAs over two A vectors). */
enum { MR = 8, VW = 4, NV_ROWS = 8, M_NR = 3 };
/* 2 panels (4 vectors per column) already keep 8-12 accumulators independent. */
#define GEMM_M_QUAD 0

/* One packed panel (R = 8 rows) x NV vectors of 4 columns (w = 4*NV). */
GEMM_INLINE void tile_n(ptrdiff_t kc, const float *restrict a, const float *const *restrict brows, ptrdiff_t col,
                        float *restrict c, ptrdiff_t ldc, ptrdiff_t rows, int acc, const float *bias, ptrdiff_t w, const int R,
                        const int NV)
{
    (void)w, (void)R;
    float32x4_t vacc[8][3];
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) {
        const float32x4_t b0 = vdupq_n_f32(bias != NULL && r < rows ? bias[r] : 0.0f);
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) vacc[r][v] = b0;
    }
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
GEMM_INLINE void tile_m(ptrdiff_t kc, const float *restrict a, ptrdiff_t pstride, const float *const *restrict brows,
                        ptrdiff_t col, float *restrict c, ptrdiff_t ldc, ptrdiff_t cs, ptrdiff_t rows, int acc,
                        const float *bias, const int P, const int NC)
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
        GEMM_STORE_TRANSPOSED(c, ldc, cs, rows, acc, bias, tmp, p, 8, NC);
    }
}

/* Whole 4-column vectors; the n % 4 tail goes to the m-vectorised tile. */
static inline ptrdiff_t vec_cols(ptrdiff_t n) { return n & ~(ptrdiff_t)3; }

static inline int m_strip_cols(ptrdiff_t left) { return left < 3 ? (int)left : 3; }

#define TILE_M_NC(P)                                                                     \
    switch (nc) {                                                                        \
    case 1: TILE_M(P, 1); break; case 2: TILE_M(P, 2); break; default: TILE_M(P, 3); break; \
    }

#include "gemm-packed-driver.inc"
#endif
