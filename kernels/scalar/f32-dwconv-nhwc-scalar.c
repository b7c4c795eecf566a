/* f32-dwconv-nhwc, portable C: the oracle for the SIMD variants and the fallback kernel.
 * Contract (kernels/include/im2row_kernels.h):
 *   out[p*out_stride + ch] = w[ch] + sum_{t<ks} in(p, t)[ch] * w[(1 + t)*channels + ch],
 *   in(p, t) = a[p*a_stride + t] + p*a_step
 * Taps accumulate in order, one multiply and one add each (the SIMD variants use FMA); NULL
 * taps are skipped. */
#include <stddef.h>

#include "im2row_kernels.h"
#include "igemm-nhwc-common.h"

void im2row_dwconv_nhwc__scalar(ptrdiff_t m, ptrdiff_t channels, ptrdiff_t ks, const float *const *a,
                                ptrdiff_t a_stride, ptrdiff_t a_step, const float *w, float *out,
                                ptrdiff_t out_stride)
{
    dwconv_nhwc_check_args(m, channels, ks, a, a_stride, a_step, w, out, out_stride);
    for (ptrdiff_t p = 0; p < m; p++, a += a_stride, out += out_stride) {
        for (ptrdiff_t ch = 0; ch < channels; ch++) out[ch] = w[ch];
        for (ptrdiff_t t = 0; t < ks; t++) {
            if (a[t] == NULL) continue;     /* a padding tap */
            const float *x = a[t] + p * a_step;
            const float *wt = w + (1 + t) * channels;
            for (ptrdiff_t ch = 0; ch < channels; ch++) out[ch] += x[ch] * wt[ch];
        }
    }
}
