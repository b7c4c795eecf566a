/* f32-scatter-bias, NEON (aarch64 ASIMD) variant.
 * Contract (im2row_kernels.h): dst[k*dst_stride] = src[k] + bias, k in [0, n),
 * dst_stride >= 1.  src must not overlap the written dst elements (the contiguous case
 * finishes with an overlapping vector that rereads src).
 * Contiguous dst: vector add and store, 16 floats a step, the tail as one vector moved back
 * to end at n.  Strided dst: vector add, then one lane store per element. */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <assert.h>

#include "im2row_kernels.h"

void im2row_scatter_bias__neon(float *dst, ptrdiff_t dst_stride, const float *src,
                               ptrdiff_t n, float bias)
{
    assert(dst_stride >= 1);
    assert(n >= 0);
    assert(n == 0 || (dst != NULL && src != NULL));
    const float32x4_t vb = vdupq_n_f32(bias);
    if (dst_stride == 1 && n >= 4) {
        ptrdiff_t k = 0;
        for (; k + 16 <= n; k += 16) {
            float32x4_t a = vaddq_f32(vld1q_f32(src + k), vb), b = vaddq_f32(vld1q_f32(src + k + 4), vb);
            float32x4_t c = vaddq_f32(vld1q_f32(src + k + 8), vb), e = vaddq_f32(vld1q_f32(src + k + 12), vb);
            vst1q_f32(dst + k, a);
            vst1q_f32(dst + k + 4, b);
            vst1q_f32(dst + k + 8, c);
            vst1q_f32(dst + k + 12, e);
        }
        for (; k + 4 < n; k += 4)
            vst1q_f32(dst + k, vaddq_f32(vld1q_f32(src + k), vb));
        vst1q_f32(dst + n - 4, vaddq_f32(vld1q_f32(src + n - 4), vb));
        return;
    }
    ptrdiff_t k = 0;
    if (dst_stride > 1) {
        for (; k + 4 <= n; k += 4) {
            float32x4_t v = vaddq_f32(vld1q_f32(src + k), vb);
            float *d = dst + k * dst_stride;
            vst1q_lane_f32(d, v, 0);
            vst1q_lane_f32(d + dst_stride, v, 1);
            vst1q_lane_f32(d + 2 * dst_stride, v, 2);
            vst1q_lane_f32(d + 3 * dst_stride, v, 3);
        }
    }
    for (; k < n; k++)
        dst[k * dst_stride] = src[k] + bias;
}
#endif
