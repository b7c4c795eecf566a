/* f32-igemm-nhwc, portable C: the oracle for the SIMD variants and the fallback kernel.
 *
 * Contract (kernels/include/im2row_kernels.h):
 *   out[p*ldc + j] = bias[j] + sum_{t<ks, ch<kc} (a[p*ks + t] + a_offset)[ch] * W[t*kc + ch][j]
 *   weights packed by im2row_pack_igemm_nhwc with nr = im2row_igemm_nhwc_nr__scalar.
 *
 * im2row_pack_igemm_nhwc is shared by every ISA: each one packs with its own nr.
 */
#include <assert.h>
#include <stddef.h>

#include "im2row_kernels.h"
#include "igemm-nhwc-common.h"

enum { MR = 4, NR = 8 };
const ptrdiff_t im2row_igemm_nhwc_mr__scalar = MR;
const ptrdiff_t im2row_igemm_nhwc_nr__scalar = NR;

void im2row_pack_igemm_nhwc(float *dst, const float *w, ptrdiff_t lda, const float *bias,
                            ptrdiff_t n, ptrdiff_t k, ptrdiff_t nr)
{
    assert(dst != NULL);
    assert(w != NULL);
    assert(n >= 1);
    assert(k >= 1);
    assert(nr >= 1);
    assert(lda >= k);
    for (ptrdiff_t j0 = 0; j0 < n; j0 += nr) {
        /* Zero columns past n let kernels load whole panels. */
        for (ptrdiff_t j = 0; j < nr; j++)
            *dst++ = (j0 + j < n && bias != NULL) ? bias[j0 + j] : 0.0f;
        for (ptrdiff_t kk = 0; kk < k; kk++)
            for (ptrdiff_t j = 0; j < nr; j++)
                *dst++ = (j0 + j < n) ? w[(j0 + j) * lda + kk] : 0.0f;
    }
}

/* Plain loops: one pixel at a time, taps and channels in order, float accumulation. */
static void tile_any(ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ks, ptrdiff_t taps, ptrdiff_t chans,
                     const float *const *a, ptrdiff_t a_offset, const float *bias, const float *w,
                     float *c, ptrdiff_t ldc)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        float acc[NR];
        for (ptrdiff_t j = 0; j < NR; j++) acc[j] = bias ? bias[j] : (j < cols ? c[r * ldc + j] : 0.0f);
        const float *wk = w;
        for (ptrdiff_t t = 0; t < taps; t++) {
            const float *x = a[r * ks + t] + a_offset;
            for (ptrdiff_t ch = 0; ch < chans; ch++, wk += NR)
                for (ptrdiff_t j = 0; j < NR; j++) acc[j] += x[ch] * wk[j];
        }
        for (ptrdiff_t j = 0; j < cols; j++) c[r * ldc + j] = acc[j];
    }
}

void im2row_igemm_nhwc__scalar(ptrdiff_t m, ptrdiff_t n, ptrdiff_t ks, ptrdiff_t kc, ptrdiff_t kslice,
                               ptrdiff_t tap0, ptrdiff_t ntaps, ptrdiff_t tap_rows, ptrdiff_t row_step,
                               const float *const *a, ptrdiff_t a_offset, const float *w, float *c,
                               ptrdiff_t ldc)
{
    igemm_nhwc_check_args(m, n, ks, kc, tap0, ntaps, tap_rows, row_step, a, w, c, ldc);
    IGEMM_NHWC_BODY(m, n, ks, kc, kslice, tap0, ntaps, tap_rows, row_step, a, w, c, ldc);
}
