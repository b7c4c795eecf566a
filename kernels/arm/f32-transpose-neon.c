/* f32-transpose, NEON variant: 4 x 4 blocks in registers.
 * Contract (im2row_kernels.h): dst[j*ldd + i] = src[i*lds + j], i < rows, j < cols. */
#include <arm_neon.h>

#include "im2row_kernels.h"

static inline void transpose_4x4(const float *src, ptrdiff_t lds, float *dst, ptrdiff_t ldd)
{
    float32x4x2_t ab = vtrnq_f32(vld1q_f32(src), vld1q_f32(src + lds));  /* a0 b0 a2 b2, a1 b1 a3 b3 */
    float32x4x2_t cd = vtrnq_f32(vld1q_f32(src + 2 * lds), vld1q_f32(src + 3 * lds));
    vst1q_f32(dst, vcombine_f32(vget_low_f32(ab.val[0]), vget_low_f32(cd.val[0])));
    vst1q_f32(dst + ldd, vcombine_f32(vget_low_f32(ab.val[1]), vget_low_f32(cd.val[1])));
    vst1q_f32(dst + 2 * ldd, vcombine_f32(vget_high_f32(ab.val[0]), vget_high_f32(cd.val[0])));
    vst1q_f32(dst + 3 * ldd, vcombine_f32(vget_high_f32(ab.val[1]), vget_high_f32(cd.val[1])));
}

void im2row_transpose__neon(ptrdiff_t rows, ptrdiff_t cols, const float *src, ptrdiff_t lds,
                            float *dst, ptrdiff_t ldd)
{
    if (rows <= 0 || cols <= 0) return;   /* the masks below assume both >= 0 */
    ptrdiff_t rows4 = rows & ~(ptrdiff_t)3, cols4 = cols & ~(ptrdiff_t)3;
    /* columns outer, rows inner: see the AVX2 variant */
    for (ptrdiff_t j0 = 0; j0 < cols4; j0 += IM2ROW_TRANSPOSE_LINE) {
        ptrdiff_t j1 = j0 + IM2ROW_TRANSPOSE_LINE < cols4 ? j0 + IM2ROW_TRANSPOSE_LINE : cols4;
        for (ptrdiff_t i = 0; i < rows4; i += 4)
            for (ptrdiff_t j = j0; j < j1; j += 4)
                transpose_4x4(src + i * lds + j, lds, dst + j * ldd + i, ldd);
    }
    if (cols4 < cols)
        im2row_transpose__scalar(rows4, cols - cols4, src + cols4, lds, dst + cols4 * ldd, ldd);
    if (rows4 < rows)
        im2row_transpose__scalar(rows - rows4, cols, src + rows4 * lds, lds, dst + rows4, ldd);
}
