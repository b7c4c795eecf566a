/* f32-gemm-packed, portable C: the oracle for the SIMD variants and the fallback kernel.
 *
 * Contract (kernels/include/im2row_kernels.h):
 *   C (m x n, element (i, j) at c[i*ldc + j*cs]) = [C +] A (m x k) @ B (k x n, row kk at b_rows[kk])
 *   A comes packed by im2row_pack_a in panels of im2row_gemm_mr__scalar rows:
 *     a_packed[(panel*k + kk)*mr + r] = A[panel*mr + r][kk], zero past row m.
 *   accumulate == 0 overwrites C (whatever it held, NaN included), != 0 adds to it; bias (m
 *   floats or NULL) is added to each row.
 *   Requires m, n, k >= 1, cs >= 1, ldc >= (n-1)*cs + 1.  Never allocates.
 *   No cache blocking and no copies: `blocking` and `work` are accepted and ignored (its tile
 *   has nr = 0, so callers size no work for it).
 *
 * im2row_pack_a is shared by every ISA: each one packs with its own mr.
 */
#include <assert.h>
#include <stddef.h>

#include "im2row_kernels.h"
#include "gemm-packed-common.h"

extern const ptrdiff_t im2row_gemm_mr__scalar;
const ptrdiff_t im2row_gemm_mr__scalar = 4;
extern const im2row_gemm_tile im2row_gemm_tile__scalar;
const im2row_gemm_tile im2row_gemm_tile__scalar = {4, 0, 4, 0};

void im2row_pack_a(float *dst, const float *a, ptrdiff_t lda, ptrdiff_t m, ptrdiff_t k, ptrdiff_t mr)
{
    assert(dst != NULL);
    assert(a != NULL);
    assert(m >= 1);
    assert(k >= 1);
    assert(mr >= 1);
    assert(lda >= k);

    for (ptrdiff_t i0 = 0; i0 < m; i0 += mr) {
        for (ptrdiff_t kk = 0; kk < k; kk++) {
            for (ptrdiff_t r = 0; r < mr; r++) {
                /* Zero rows let kernels run whole panels without reading past A. */
                *dst++ = (i0 + r < m) ? a[(i0 + r) * lda + kk] : 0.0f;
            }
        }
    }
}

void im2row_gemm__scalar(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
                         const float *const *b_rows, float *c, ptrdiff_t ldc, ptrdiff_t cs, int accumulate,
                         const float *bias, const im2row_gemm_blocking *blocking, float *work)
{
    enum { MR = 4 };
    (void)blocking, (void)work;
    gemm_packed_check_args(m, n, k, a_packed, b_rows, c, ldc, cs);
    assert(im2row_gemm_mr__scalar == MR);

    for (ptrdiff_t i0 = 0; i0 < m; i0 += MR) {
        const float *ap = a_packed + i0 * k;
        const ptrdiff_t rows = (m - i0 < MR) ? m - i0 : MR;
        for (ptrdiff_t r = 0; r < rows; r++) {
            float *crow = c + (i0 + r) * ldc;
            const float b = bias != NULL ? bias[i0 + r] : 0.0f;
            for (ptrdiff_t j = 0; j < n; j++) {
                crow[j * cs] = (accumulate ? crow[j * cs] : 0.0f) + b;
            }
            /* Row-wise axpy keeps the inner loop contiguous in B and C (auto-vectorisable). */
            for (ptrdiff_t kk = 0; kk < k; kk++) {
                const float av = ap[kk * MR + r];
                const float *brow = b_rows[kk];
                for (ptrdiff_t j = 0; j < n; j++) {
                    crow[j * cs] += av * brow[j];
                }
            }
        }
    }
}
