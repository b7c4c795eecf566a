/* Pieces of the f32-gather kernels that every ISA file uses: argument checks, the in-range
 * interval of k and the loops for short runs.  Header-only (static inline). */
#ifndef IM2ROW_GATHER_COMMON_H
#define IM2ROW_GATHER_COMMON_H

#include <assert.h>
#include <stddef.h>

/* The preconditions of the contract in im2row_kernels.h (debug builds only); 0 when n is 0. */
static inline int gather_check_args(const float *dst, ptrdiff_t src_len, ptrdiff_t stride, ptrdiff_t n)
{
    assert(stride >= 1);
    assert(n >= 0);
    assert(src_len >= 0);
    assert(n == 0 || dst != NULL);
    (void)dst, (void)src_len, (void)stride;
    return n > 0;
}

/* k_lo: first k with start + k*stride >= 0; k_hi: first k with index >= src_len (not clamped).
 * Strides 1 and 2 (nearly every call) go without a division: a 64-bit idiv costs more than
 * copying a short row. */
static inline void gather_bounds(ptrdiff_t start, ptrdiff_t stride, ptrdiff_t src_len, ptrdiff_t *k_lo,
                                 ptrdiff_t *k_hi)
{
    if (stride == 1) {
        *k_lo = start >= 0 ? 0 : -start;
        *k_hi = start >= src_len ? 0 : src_len - start;
    } else if (stride == 2) {
        *k_lo = start >= 0 ? 0 : (1 - start) >> 1;
        *k_hi = start >= src_len ? 0 : (src_len - start + 1) >> 1;
    } else {
        *k_lo = start >= 0 ? 0 : (-start + stride - 1) / stride;
        *k_hi = start >= src_len ? 0 : (src_len - start + stride - 1) / stride;
    }
}

/* Clamps [k_lo, k_hi) into [0, n], empty as k_hi == k_lo; src may be NULL only then. */
static inline void gather_clamp(ptrdiff_t *k_lo, ptrdiff_t *k_hi, ptrdiff_t n, const float *src)
{
    if (*k_lo > n) *k_lo = n;
    if (*k_hi > n) *k_hi = n;
    if (*k_hi < *k_lo) *k_hi = *k_lo;
    assert(*k_hi == *k_lo || src != NULL);
    (void)src;
}

/* Every ISA's prologue: checks, then dst[0, k_lo) is zeros, dst[k_lo, k_hi) copies
 * src[start + k*stride], dst[k_hi, n) zeros.  0: nothing to do (n == 0). */
static inline int gather_interval(const float *dst, const float *src, ptrdiff_t src_len,
                                  ptrdiff_t start, ptrdiff_t stride, ptrdiff_t n,
                                  ptrdiff_t *k_lo, ptrdiff_t *k_hi)
{
    if (!gather_check_args(dst, src_len, stride, n))
        return 0;
    gather_bounds(start, stride, src_len, k_lo, k_hi);
    gather_clamp(k_lo, k_hi, n, src);
    return 1;
}

/* Runs shorter than one vector: plain loops (d[k] = 0, d[k] = s[k*stride], k < m).  The AVX2
 * file keeps its own: through these GCC lays its function out differently. */
static inline void gather_zero_short(float *d, ptrdiff_t m)
{
    for (ptrdiff_t k = 0; k < m; k++)
        d[k] = 0.0f;
}

static inline void gather_copy_short(float *d, const float *s, ptrdiff_t stride, ptrdiff_t m)
{
    for (ptrdiff_t k = 0; k < m; k++)
        d[k] = s[k * stride];
}

#endif
