/* f32-transpose, portable scalar variant (also the tail handler of the SIMD variants).
 * Contract (im2row_kernels.h): dst[j*ldd + i] = src[i*lds + j], i < rows, j < cols. */
#include "im2row_kernels.h"

void im2row_transpose__scalar(ptrdiff_t rows, ptrdiff_t cols, const float *src, ptrdiff_t lds,
                              float *dst, ptrdiff_t ldd)
{
    /* A strip of one cache line's worth of columns at a time, all rows: the strip's source
     * lines are used up and its destination rows written whole while they are in L1. */
    for (ptrdiff_t j0 = 0; j0 < cols; j0 += IM2ROW_TRANSPOSE_LINE) {
        ptrdiff_t j1 = j0 + IM2ROW_TRANSPOSE_LINE < cols ? j0 + IM2ROW_TRANSPOSE_LINE : cols;
        for (ptrdiff_t i = 0; i < rows; i++)
            for (ptrdiff_t j = j0; j < j1; j++)
                dst[j * ldd + i] = src[i * lds + j];
    }
}
