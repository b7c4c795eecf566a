/* f32-gather, NEON (aarch64 ASIMD) variant.
 * Contract (im2row_kernels.h): dst[k] = src[start + k*stride] when the index lies in
 * [0, src_len), else 0, for k in [0, n); stride >= 1; src may be NULL when no index is in
 * range.  The in-range k form one interval [k_lo, k_hi), so a row is zeros | copy | zeros.
 * Stride 1 copies 16 floats a step and ends with a 4-float vector moved back to overlap
 * (stores are idempotent).  Strides 2-4 deinterleave with vld2q/vld3q/vld4q, only while the
 * structure load stays within the last used element; a short scalar loop finishes the row.
 * Other strides use a plain loop. */
#if defined(__aarch64__)
#include <arm_neon.h>

#include "im2row_kernels.h"
#include "gather-common.h"

static inline void zero_run(float *d, ptrdiff_t m)
{
    const float32x4_t z = vdupq_n_f32(0.0f);
    if (m >= 4) {
        ptrdiff_t k = 0;
        for (; k + 4 < m; k += 4)
            vst1q_f32(d + k, z);
        vst1q_f32(d + m - 4, z);
    } else {
        gather_zero_short(d, m);
    }
}

static inline void copy_run(float *d, const float *s, ptrdiff_t m)
{
    if (m >= 4) {
        ptrdiff_t k = 0;
        for (; k + 16 <= m; k += 16) {
            float32x4_t a = vld1q_f32(s + k), b = vld1q_f32(s + k + 4);
            float32x4_t c = vld1q_f32(s + k + 8), e = vld1q_f32(s + k + 12);
            vst1q_f32(d + k, a);
            vst1q_f32(d + k + 4, b);
            vst1q_f32(d + k + 8, c);
            vst1q_f32(d + k + 12, e);
        }
        for (; k + 4 < m; k += 4)
            vst1q_f32(d + k, vld1q_f32(s + k));
        vst1q_f32(d + m - 4, vld1q_f32(s + m - 4));
    } else {
        gather_copy_short(d, s, 1, m);
    }
}

void im2row_gather__neon(float *dst, const float *src, ptrdiff_t src_len,
                         ptrdiff_t start, ptrdiff_t stride, ptrdiff_t n)
{
    ptrdiff_t k_lo, k_hi;
    if (!gather_interval(dst, src, src_len, start, stride, n, &k_lo, &k_hi))
        return;

    if (k_lo)
        zero_run(dst, k_lo);
    const ptrdiff_t m = k_hi - k_lo;
    if (m) {
        float *d = dst + k_lo;
        const float *s = src + start + k_lo * stride;
        ptrdiff_t k = 0;
        /* A vldNq step reads s[N*k .. N*k + 4N-1]; k + 5 <= m keeps that at or below
         * s[N*(m-1)], the last element used. */
        switch (stride) {
        case 1:
            copy_run(d, s, m);
            k = m;
            break;
        case 2:
            for (; k + 5 <= m; k += 4)
                vst1q_f32(d + k, vld2q_f32(s + 2 * k).val[0]);
            break;
        case 3:
            for (; k + 5 <= m; k += 4)
                vst1q_f32(d + k, vld3q_f32(s + 3 * k).val[0]);
            break;
        case 4:
            for (; k + 5 <= m; k += 4)
                vst1q_f32(d + k, vld4q_f32(s + 4 * k).val[0]);
            break;
        default:
            break;
        }
        for (; k < m; k++)
            d[k] = s[k * stride];
    }
    if (k_hi < n)
        zero_run(dst + k_hi, n - k_hi);
}
#endif
