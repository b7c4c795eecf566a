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
                                        ptrdiff_t tap0, ptrdiff_t ntaps, ptrdiff_t tap_rows,
                                        ptrdiff_t row_step, const float *const *a,
                                        const float *w, const float *c, ptrdiff_t ldc)
{
    assert(m >= 1);
    assert(n >= 1);
    assert(ks >= 1);
    assert(kc >= 1);
    assert(tap0 >= 0 && ntaps >= 1 && tap_rows >= 1);
    assert(tap_rows == 1 || row_step >= ntaps);
    assert(tap0 + (tap_rows - 1) * row_step + ntaps <= ks);
    (void)tap_rows, (void)row_step;
    assert(a != NULL);
    assert(w != NULL);
    assert(c != NULL);
    assert(ldc >= n);
    (void)m, (void)n, (void)ks, (void)kc, (void)tap0, (void)ntaps, (void)a, (void)w, (void)c, (void)ldc;
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

/* f32-dwconv-nhwc: whether the call has no NULL (skipped) tap; the contract makes the first
 * pixel's pointers speak for every pixel of the call. */
IGEMM_INLINE int dwconv_nhwc_all_taps(const float *const *a, ptrdiff_t ks)
{
    for (ptrdiff_t t = 0; t < ks; t++)
        if (a[t] == NULL) return 0;
    return 1;
}

/* f32-dwconv-nhwc on a run of pixels (a_stride = 0): the kernel rows of R taps whose taps are
 * one pixel step apart (bit r: row r), whose R taps of P pixels then read P + R - 1 input
 * vectors; a row with a NULL (skipped) tap is not one. */
static inline unsigned dwconv_nhwc_chained_rows(const float *const *a, ptrdiff_t ks, ptrdiff_t a_step,
                                                ptrdiff_t R)
{
    unsigned bits = 0;
    for (ptrdiff_t t0 = 0, r = 0; t0 < ks; t0 += R, r++) {
        int run = a[t0] != NULL;
        for (ptrdiff_t j = 1; j < R && run; j++) run = a[t0 + j] == a[t0 + j - 1] + a_step;
        bits |= (unsigned)run << r;
    }
    return bits;
}

/* Taps x channels of one k slice: about `kslice` k steps (<= 0: all of ks*kc) in equal
 * slices, either whole taps (kslice >= kc) or a part of one tap's channels, so that a slice's
 * weights are contiguous in the packed panel. */
IGEMM_INLINE void igemm_nhwc_slice(ptrdiff_t ks, ptrdiff_t kc, ptrdiff_t kslice, ptrdiff_t *taps,
                                   ptrdiff_t *chans)
{
    *taps = ks, *chans = kc;
    if (kslice <= 0 || kslice >= ks * kc) return;
    if (kslice >= kc) {
        const ptrdiff_t slices = (ks + kslice / kc - 1) / (kslice / kc);
        *taps = (ks + slices - 1) / slices;
    } else {
        const ptrdiff_t slices = (kc + kslice - 1) / kslice;
        *taps = 1, *chans = (kc + slices - 1) / slices;
    }
}

/* The body of an igemm-nhwc variant: column panels outside; in a panel, the box's runs of
 * taps, each in k slices (its kslice x NR weights stay in L1 while every pixel tile of the
 * call streams its input past them), pixel tiles of MR inside.  Only the box's taps are summed
 * (a run is a contiguous piece of each panel; the caller leaves out taps that fall in the
 * padding for every pixel).  The first slice starts from the bias, later ones add to the
 * output the earlier ones stored.  The caller has MR, NR, a_offset in scope and a function
 * tile_any(rows, cols, ks, taps, chans, a, a_offset, bias, w, c, ldc): one tile of `rows` <=
 * MR pixels x `cols` <= NR columns over taps x chans k steps of pointer rows of stride ks,
 * starting from bias (or from c where bias is NULL). */
#define IGEMM_NHWC_BODY(m, n, ks, kc, kslice, tap0, ntaps, tap_rows, row_step, a, w, c, ldc)     \
    do {                                                                                         \
        const ptrdiff_t panel_floats_ = NR * (1 + (ks) * (kc));                                  \
        ptrdiff_t taps_, chans_;                                                                 \
        igemm_nhwc_slice(ntaps, kc, kslice, &taps_, &chans_);                                    \
        for (ptrdiff_t j0_ = 0; j0_ < (n); j0_ += NR) {                                          \
            const ptrdiff_t cols_ = (n) - j0_ < NR ? (n) - j0_ : NR;                             \
            const float *panel_ = (w) + (j0_ / NR) * panel_floats_;                              \
            for (ptrdiff_t r_ = 0; r_ < (tap_rows); r_++) {                                      \
                const ptrdiff_t run0_ = (tap0) + r_ * (row_step), run_end_ = run0_ + (ntaps);    \
                for (ptrdiff_t t0_ = run0_; t0_ < run_end_; t0_ += taps_) {                      \
                    const ptrdiff_t nt_ = run_end_ - t0_ < taps_ ? run_end_ - t0_ : taps_;       \
                    for (ptrdiff_t c0_ = 0; c0_ < (kc); c0_ += chans_) {                         \
                        const ptrdiff_t nc_ = (kc) - c0_ < chans_ ? (kc) - c0_ : chans_;         \
                        const float *bias_ = t0_ == (tap0) && c0_ == 0 ? panel_ : NULL;          \
                        const float *slice_ = panel_ + NR * (1 + t0_ * (kc) + c0_);              \
                        for (ptrdiff_t p0_ = 0; p0_ < (m); p0_ += MR) {                          \
                            const ptrdiff_t rows_ = (m) - p0_ < MR ? (m) - p0_ : MR;             \
                            tile_any(rows_, cols_, ks, nt_, nc_, (a) + p0_ * (ks) + t0_,         \
                                     a_offset + c0_, bias_, slice_, (c) + p0_ * (ldc) + j0_,     \
                                     ldc);                                                       \
                        }                                                                        \
                    }                                                                            \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    } while (0)

/* The tile dispatch and the entry point of a SIMD variant: `rows` (1..MR, MR <= 12) picks the
 * pixel count of tile() at compile time, `cols` one vector (<= VW columns) or two.  The ISA
 * file defines MR, NR, VW and tile(ks, taps, chans, a, a_offset, bias, w, c, ldc, cols, R,
 * NV). */
#define IGEMM_NHWC_ROWS_CASE(R)                                                                  \
    case R:                                                                                      \
        if (cols > VW)                                                                           \
            tile(ks, taps, chans, ap, a_offset, bias, wp, cp, ldc, cols, (R) <= MR ? (R) : MR, 2); \
        else                                                                                     \
            tile(ks, taps, chans, ap, a_offset, bias, wp, cp, ldc, cols, (R) <= MR ? (R) : MR, 1); \
        break;
#define IGEMM_NHWC_ENTRY(FN)                                                                     \
    static void tile_any(ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ks, ptrdiff_t taps,           \
                         ptrdiff_t chans, const float *const *ap, ptrdiff_t a_offset,            \
                         const float *bias, const float *wp, float *cp, ptrdiff_t ldc)           \
    {                                                                                            \
        switch (rows) {                                                                          \
            IGEMM_NHWC_ROWS_CASE(1) IGEMM_NHWC_ROWS_CASE(2) IGEMM_NHWC_ROWS_CASE(3)              \
            IGEMM_NHWC_ROWS_CASE(4) IGEMM_NHWC_ROWS_CASE(5) IGEMM_NHWC_ROWS_CASE(6)              \
            IGEMM_NHWC_ROWS_CASE(7) IGEMM_NHWC_ROWS_CASE(8) IGEMM_NHWC_ROWS_CASE(9)              \
            IGEMM_NHWC_ROWS_CASE(10) IGEMM_NHWC_ROWS_CASE(11)                                    \
            default: IGEMM_NHWC_ROWS_CASE(12)                                                    \
        }                                                                                        \
    }                                                                                            \
    void FN(ptrdiff_t m, ptrdiff_t n, ptrdiff_t ks, ptrdiff_t kc, ptrdiff_t kslice,              \
            ptrdiff_t tap0, ptrdiff_t ntaps, ptrdiff_t tap_rows, ptrdiff_t row_step,             \
            const float *const *a, ptrdiff_t a_offset, const float *w, float *c, ptrdiff_t ldc)  \
    {                                                                                            \
        igemm_nhwc_check_args(m, n, ks, kc, tap0, ntaps, tap_rows, row_step, a, w, c, ldc);      \
        IGEMM_NHWC_BODY(m, n, ks, kc, kslice, tap0, ntaps, tap_rows, row_step, a, w, c, ldc);    \
    }

#endif
