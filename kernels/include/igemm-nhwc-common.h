/* Pieces every f32-igemm-nhwc / f32-dwconv-nhwc file uses (scalar included): the contract's
 * argument checks and the loop over column panels and pixel tiles around an ISA's register
 * tile.  Header-only. */
#ifndef IM2ROW_IGEMM_NHWC_COMMON_H
#define IM2ROW_IGEMM_NHWC_COMMON_H

#include <assert.h>
#include <stddef.h>

#define IGEMM_INLINE static inline __attribute__((always_inline))

/* The preconditions of the contract in im2row_kernels.h (debug builds only). */
IGEMM_INLINE void igemm_nhwc_check_args(ptrdiff_t m, ptrdiff_t n, ptrdiff_t ks, ptrdiff_t kc,
                                        const float *const *a, const float *w, const float *c,
                                        ptrdiff_t ldc)
{
    assert(m >= 1);
    assert(n >= 1);
    assert(ks >= 1);
    assert(kc >= 1);
    assert(a != NULL);
    assert(w != NULL);
    assert(c != NULL);
    assert(ldc >= n);
    (void)m, (void)n, (void)ks, (void)kc, (void)a, (void)w, (void)c, (void)ldc;
}

IGEMM_INLINE void dwconv_nhwc_check_args(ptrdiff_t m, ptrdiff_t channels, ptrdiff_t ks,
                                         const float *const *a, ptrdiff_t a_stride, ptrdiff_t a_step,
                                         const float *w, const float *out, ptrdiff_t out_stride)
{
    assert(a_stride >= 0);
    assert(a_step >= 0);
    (void)a_stride, (void)a_step;
    assert(m >= 1);
    assert(channels >= 1);
    assert(ks >= 1);
    assert(a != NULL);
    assert(w != NULL);
    assert(out != NULL);
    assert(out_stride >= channels);
    (void)m, (void)channels, (void)ks, (void)a, (void)w, (void)out, (void)out_stride;
}

/* The body of an igemm-nhwc variant: column panels outside (one panel of packed weights,
 * ks*kc*NR floats, is reused by every pixel tile of the call while it sits in L1/L2), pixel
 * tiles of MR inside.  The caller has MR, NR, a_offset in scope and a function tile_any(rows,
 * cols, ks, kc, a, a_offset, w, c, ldc): one tile of `rows` <= MR pixels x `cols` <= NR
 * columns. */
#define IGEMM_NHWC_BODY(m, n, ks, kc, a, w, c, ldc)                                              \
    do {                                                                                         \
        const ptrdiff_t panel_floats_ = NR * (1 + (ks) * (kc));                                  \
        for (ptrdiff_t j0_ = 0; j0_ < (n); j0_ += NR) {                                          \
            const ptrdiff_t cols_ = (n) - j0_ < NR ? (n) - j0_ : NR;                             \
            const float *panel_ = (w) + (j0_ / NR) * panel_floats_;                              \
            for (ptrdiff_t p0_ = 0; p0_ < (m); p0_ += MR) {                                      \
                const ptrdiff_t rows_ = (m) - p0_ < MR ? (m) - p0_ : MR;                         \
                tile_any(rows_, cols_, ks, kc, (a) + p0_ * (ks), a_offset, panel_,               \
                         (c) + p0_ * (ldc) + j0_, ldc);                                          \
            }                                                                                    \
        }                                                                                        \
    } while (0)

/* The tile dispatch and the entry point of a SIMD variant: `rows` (1..MR, MR <= 8) picks the
 * pixel count of tile() at compile time, `cols` one vector (<= VW columns) or two.  The ISA
 * file defines MR, NR, VW and tile(ks, kc, a, a_offset, w, c, ldc, cols, R, NV). */
#define IGEMM_NHWC_ROWS_CASE(R)                                                                  \
    case R:                                                                                      \
        if (cols > VW) tile(ks, kc, ap, a_offset, wp, cp, ldc, cols, (R) <= MR ? (R) : MR, 2);   \
        else tile(ks, kc, ap, a_offset, wp, cp, ldc, cols, (R) <= MR ? (R) : MR, 1);             \
        break;
#define IGEMM_NHWC_ENTRY(FN)                                                                     \
    static void tile_any(ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ks, ptrdiff_t kc,             \
                         const float *const *ap, ptrdiff_t a_offset, const float *wp, float *cp, \
                         ptrdiff_t ldc)                                                          \
    {                                                                                            \
        switch (rows) {                                                                          \
            IGEMM_NHWC_ROWS_CASE(1) IGEMM_NHWC_ROWS_CASE(2) IGEMM_NHWC_ROWS_CASE(3)              \
            IGEMM_NHWC_ROWS_CASE(4) IGEMM_NHWC_ROWS_CASE(5) IGEMM_NHWC_ROWS_CASE(6)              \
            IGEMM_NHWC_ROWS_CASE(7)                                                              \
            default: IGEMM_NHWC_ROWS_CASE(8)                                                     \
        }                                                                                        \
    }                                                                                            \
    void FN(ptrdiff_t m, ptrdiff_t n, ptrdiff_t ks, ptrdiff_t kc, const float *const *a,         \
            ptrdiff_t a_offset, const float *w, float *c, ptrdiff_t ldc)                         \
    {                                                                                            \
        igemm_nhwc_check_args(m, n, ks, kc, a, w, c, ldc);                                       \
        IGEMM_NHWC_BODY(m, n, ks, kc, a, w, c, ldc);                                             \
    }

#endif
