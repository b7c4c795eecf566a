/* f32-dwconv-s2, portable scalar variant (also the oracle for the SIMD variants).
 * Contract (im2row_kernels.h): stride-2 depthwise on the unpadded plane,
 *   out[y][x] = bias + sum_{i<kh, j<kw} w[i*kw+j] * in(2y - pad_top + i, 2x - pad_left + j),
 * taps outside the plane reading zero.  Taps are summed in (i, j) order, skipping those
 * outside (they add zero), the order the SIMD variants use too. */
#include "im2row_kernels.h"
#include "dwconv-common.h"

void im2row_dwconv_s2__scalar(float *out, ptrdiff_t out_stride, ptrdiff_t oh, ptrdiff_t ow,
                              const float *plane, ptrdiff_t height, ptrdiff_t width,
                              ptrdiff_t pad_top, ptrdiff_t pad_left, const float *w,
                              ptrdiff_t kh, ptrdiff_t kw, float bias)
{
    if (!dwconv_s2_check_args(out, out_stride, oh, ow, plane, height, width, pad_top, pad_left, w, kh, kw))
        return;
    for (ptrdiff_t y = 0; y < oh; y++)
        for (ptrdiff_t x = 0; x < ow; x++) {
            float acc = bias;
            for (ptrdiff_t i = 0; i < kh; i++) {
                const ptrdiff_t r = 2 * y - pad_top + i;
                if (r < 0 || r >= height)
                    continue;
                for (ptrdiff_t j = 0; j < kw; j++) {
                    const ptrdiff_t c = 2 * x - pad_left + j;
                    if (c >= 0 && c < width)
                        acc += w[i * kw + j] * plane[r * width + c];
                }
            }
            out[y * out_stride + x] = acc;
        }
}
