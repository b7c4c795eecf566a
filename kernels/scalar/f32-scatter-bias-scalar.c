/* f32-scatter-bias, portable scalar variant (also the oracle for the SIMD variants).
 * Contract (im2row_kernels.h): dst[k*dst_stride] = src[k] + bias, k in [0, n),
 * dst_stride >= 1.  src and the written dst elements must not overlap. */
#include <assert.h>

#include "im2row_kernels.h"

void im2row_scatter_bias__scalar(float *dst, ptrdiff_t dst_stride, const float *src,
                                 ptrdiff_t n, float bias)
{
    assert(dst_stride >= 1);
    assert(n >= 0);
    assert(n == 0 || (dst != NULL && src != NULL));
    for (ptrdiff_t k = 0; k < n; k++)
        dst[k * dst_stride] = src[k] + bias;
}
