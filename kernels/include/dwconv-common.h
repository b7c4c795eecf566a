/* Pieces of the f32-dwconv kernels that every ISA file uses: argument checks and tap
 * addressing.  Header-only (static inline). */
#ifndef IM2ROW_DWCONV_COMMON_H
#define IM2ROW_DWCONV_COMMON_H

#include <assert.h>
#include <stddef.h>

/* The preconditions of the contract in im2row_kernels.h (debug builds only); 0 when the output
 * is empty, so that the kernel returns before touching any pointer. */
static inline int dwconv_check_args(const float *out, ptrdiff_t out_stride, ptrdiff_t oh, ptrdiff_t ow,
                                    const float *phases, ptrdiff_t hp, ptrdiff_t phase_w, const float *w,
                                    ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh,
                                    ptrdiff_t dw)
{
    assert(oh >= 0 && ow >= 0);
    assert(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && dh >= 1 && dw >= 1);
    assert(out_stride >= ow);
    if (oh == 0 || ow == 0)
        return 0;
    assert(out != NULL && phases != NULL && w != NULL);
    assert(phase_w >= ow + ((kw - 1) * dw) / sw);
    assert(hp >= (oh - 1) * sh + (kh - 1) * dh + 1);
    (void)out, (void)out_stride, (void)phases, (void)hp, (void)phase_w, (void)w;
    (void)kh, (void)kw, (void)sh, (void)sw, (void)dh, (void)dw;
    return 1;
}

/* Offset of tap column j's input in the phase planes (phase (j*dw) % sw, column (j*dw) / sw).
 * The per-tap inner loops keep the expression written out: regrouped, GCC emits other code. */
static inline ptrdiff_t dwconv_tap(ptrdiff_t j, ptrdiff_t hp, ptrdiff_t pw, ptrdiff_t sw, ptrdiff_t dw)
{
    return ((j * dw) % sw) * hp * pw + (j * dw) / sw;
}

/* The preconditions of the f32-dwconv-s2 contract (debug builds only); 0 when the output is
 * empty. */
static inline int dwconv_s2_check_args(const float *out, ptrdiff_t out_stride, ptrdiff_t oh, ptrdiff_t ow,
                                       const float *plane, ptrdiff_t height, ptrdiff_t width,
                                       ptrdiff_t pad_top, ptrdiff_t pad_left, const float *w,
                                       ptrdiff_t kh, ptrdiff_t kw)
{
    assert(oh >= 0 && ow >= 0 && height >= 0 && width >= 0);
    assert(kh >= 1 && kw >= 1 && kw <= IM2ROW_DWCONV_S2_MAX_KW);
    assert(pad_top >= 0 && pad_left >= 0);
    assert(out_stride >= ow);
    if (oh == 0 || ow == 0)
        return 0;
    assert(out != NULL && w != NULL);
    assert(plane != NULL || height == 0 || width == 0);
    (void)out, (void)out_stride, (void)plane, (void)height, (void)width, (void)pad_top;
    (void)pad_left, (void)w, (void)kh, (void)kw;
    return 1;
}

#endif
