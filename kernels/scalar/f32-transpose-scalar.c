/* f32-transpose, portable scalar variant (also the tail handler of the SIMD variants).
 * Contract (im2row_kernels.h): dst[j*ldd + i] = src[i*lds + j], i < rows, j < cols. */
#include "im2row_kernels.h"

/* Blocks of 16 x 16: the 16 source lines and 16 destination lines a block touches stay in L1
 * while it is moved, whatever the strides. */
#define TRANSPOSE_BLOCK 16

void im2row_transpose__scalar(ptrdiff_t rows, ptrdiff_t cols, const float *src, ptrdiff_t lds,
                              float *dst, ptrdiff_t ldd)
{
    for (ptrdiff_t i0 = 0; i0 < rows; i0 += TRANSPOSE_BLOCK) {
        ptrdiff_t i1 = i0 + TRANSPOSE_BLOCK < rows ? i0 + TRANSPOSE_BLOCK : rows;
        for (ptrdiff_t j0 = 0; j0 < cols; j0 += TRANSPOSE_BLOCK) {
            ptrdiff_t j1 = j0 + TRANSPOSE_BLOCK < cols ? j0 + TRANSPOSE_BLOCK : cols;
            for (ptrdiff_t j = j0; j < j1; j++)
                for (ptrdiff_t i = i0; i < i1; i++)
                    dst[j * ldd + i] = src[i * lds + j];
        }
    }
}
