/* Pieces of the f32-gemm-packed kernels that every ISA file uses (scalar included): argument
 * checks and the transposed store of the m-vectorised tiles.  Header-only (static inline). */
#ifndef IM2ROW_GEMM_PACKED_COMMON_H
#define IM2ROW_GEMM_PACKED_COMMON_H

#include <assert.h>
#include <stddef.h>

/* Tile sizes must be constants inside the tiles so that accumulator arrays live in registers. */
#define GEMM_INLINE static inline __attribute__((always_inline))

/* The preconditions of the contract in im2row_kernels.h (debug builds only). */
GEMM_INLINE void gemm_packed_check_args(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
                                        const float *const *b_rows, const float *c, ptrdiff_t ldc, ptrdiff_t cs)
{
    assert(m >= 1);
    assert(n >= 1);
    assert(k >= 1);
    assert(a_packed != NULL);
    assert(b_rows != NULL);
    assert(c != NULL);
    assert(cs >= 1);
    assert(ldc >= (n - 1) * cs + 1);
    (void)m, (void)n, (void)k, (void)a_packed, (void)b_rows, (void)c, (void)ldc, (void)cs;
}

/* Panel p of an m-vectorised tile (rows W*p .. W*p + W-1, fewer past `rows`), held transposed in
 * tmp (column j in tmp[j]), into C element by element, since C columns may be strided (cs > 1);
 * acc adds to C, bias (of the tile's first row, or NULL) to every element of its row.  A macro,
 * not a function: GCC vectorises the function form differently. */
#define GEMM_STORE_TRANSPOSED(c, ldc, cs, rows, acc, bias, tmp, p, W, NC)                             \
    do {                                                                                              \
        const ptrdiff_t rp_ = (rows) - (W) * (p) < (W) ? (rows) - (W) * (p) : (W);                    \
        for (ptrdiff_t r_ = 0; r_ < rp_; r_++) {                                                      \
            float *cr_ = (c) + ((W) * (p) + r_) * (ldc);                                              \
            const float b_ = (bias) != NULL ? (bias)[(W) * (p) + r_] : 0.0f;                          \
            _Pragma("GCC unroll 12")                                                                  \
            for (int j_ = 0; j_ < (NC); j_++)                                                         \
                cr_[j_ * (cs)] = ((acc) ? cr_[j_ * (cs)] : 0.0f) + (b_ + (tmp)[j_][r_]);               \
        }                                                                                             \
    } while (0)

#endif
