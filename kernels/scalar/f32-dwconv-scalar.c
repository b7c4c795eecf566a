/* f32-dwconv, portable scalar variant (also the oracle for the SIMD variants).
 * Contract (im2row_kernels.h): one zero-padded input plane, given as sw column phases
 * (phases[p][r][u] = xpad[r][u*sw + p], each phase hp x phase_w), convolved with one
 * kh x kw filter:
 *   out[y][x] = bias + sum_{i<kh, j<kw} w[i*kw+j] * xpad[y*sh + i*dh][x*sw + j*dw]
 * Tap column j reads phase (j*dw) % sw at column x + (j*dw) / sw, so after the phase split
 * every tap reads a contiguous run of input: the stride only changes which row is read.
 * Taps are summed in (i, j) order, the order the SIMD variants use too. */
#include "im2row_kernels.h"
#include "dwconv-common.h"

void im2row_dwconv__scalar(float *out, ptrdiff_t out_stride, ptrdiff_t oh, ptrdiff_t ow,
                           const float *phases, ptrdiff_t hp, ptrdiff_t phase_w,
                           const float *w, ptrdiff_t kh, ptrdiff_t kw,
                           ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw,
                           float bias)
{
    if (!dwconv_check_args(out, out_stride, oh, ow, phases, hp, phase_w, w, kh, kw, sh, sw, dh, dw))
        return;

    for (ptrdiff_t y = 0; y < oh; y++) {
        float *o = out + y * out_stride;
        for (ptrdiff_t x = 0; x < ow; x++)
            o[x] = bias;
        for (ptrdiff_t i = 0; i < kh; i++) {
            const ptrdiff_t r = y * sh + i * dh;
            for (ptrdiff_t j = 0; j < kw; j++) {
                const float wij = w[i * kw + j];
                const float *s = phases + ((j * dw) % sw) * hp * phase_w + r * phase_w + (j * dw) / sw;
                for (ptrdiff_t x = 0; x < ow; x++)
                    o[x] += wij * s[x];
            }
        }
    }
}
