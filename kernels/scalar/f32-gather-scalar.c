/* f32-gather, portable scalar variant (also the oracle for the SIMD variants).
 * Contract (im2row_kernels.h): dst[k] = src[start + k*stride] when the index lies in
 * [0, src_len), else 0, for k in [0, n); stride >= 1; src may be NULL when no index is
 * in range.  The in-range k form one interval [k_lo, k_hi) because stride > 0, so the row
 * is written as zeros | copy | zeros with no per-element bounds test. */
#include <string.h>

#include "im2row_kernels.h"
#include "gather-common.h"

void im2row_gather__scalar(float *dst, const float *src, ptrdiff_t src_len,
                           ptrdiff_t start, ptrdiff_t stride, ptrdiff_t n)
{
    ptrdiff_t k_lo, k_hi;
    if (!gather_interval(dst, src, src_len, start, stride, n, &k_lo, &k_hi))
        return;

    ptrdiff_t k = 0;
    for (; k < k_lo; k++)
        dst[k] = 0.0f;
    if (k_hi > k_lo) {   /* src is only touched here: it may be NULL otherwise */
        const float *s = src + start + k_lo * stride;
        if (stride == 1) {
            memcpy(dst + k_lo, s, (size_t)(k_hi - k_lo) * sizeof(float));
        } else {
            for (; k < k_hi; k++, s += stride)
                dst[k] = *s;
        }
        k = k_hi;
    }
    for (; k < n; k++)
        dst[k] = 0.0f;
}
