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

/* The f32-dwconv-s2 entry point `entry` of an ISA file around its always-inline
 *   conv(out, os, oh, ow, plane, height, width, pad_top, pad_left, w, bias, KH, KW):
 * an out-of-line instance per square kernel of MobileNet / EfficientNet / ConvNeXt (3x3, 5x5,
 * 7x7), each with its own register allocation, and one with the taps in runtime loops for
 * the other shapes. */
#define DWCONV_S2_INSTANCE(name, KH, KW)                                                           \
    static __attribute__((noinline)) void name(float *out, ptrdiff_t os, ptrdiff_t oh, ptrdiff_t ow,  \
                                               const float *plane, ptrdiff_t height, ptrdiff_t width, \
                                               ptrdiff_t pad_top, ptrdiff_t pad_left, const float *w, \
                                               ptrdiff_t kh, ptrdiff_t kw, float bias)                \
    {                                                                                               \
        (void)kh, (void)kw;                                                                         \
        conv(out, os, oh, ow, plane, height, width, pad_top, pad_left, w, bias, KH, KW);           \
    }
#define DWCONV_S2_ENTRY(entry)                                                                      \
    DWCONV_S2_INSTANCE(s2_3x3, 3, 3)                                                                \
    DWCONV_S2_INSTANCE(s2_5x5, 5, 5)                                                                \
    DWCONV_S2_INSTANCE(s2_7x7, 7, 7)                                                                \
    DWCONV_S2_INSTANCE(s2_any, (int)kh, (int)kw)                                                    \
    void entry(float *out, ptrdiff_t out_stride, ptrdiff_t oh, ptrdiff_t ow, const float *plane,    \
               ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left,            \
               const float *w, ptrdiff_t kh, ptrdiff_t kw, float bias)                              \
    {                                                                                               \
        if (!dwconv_s2_check_args(out, out_stride, oh, ow, plane, height, width, pad_top, pad_left, \
                                  w, kh, kw))                                                       \
            return;                                                                                 \
        void (*run)(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t,  \
                    ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, float) =             \
            kh != kw ? s2_any : kh == 3 ? s2_3x3 : kh == 5 ? s2_5x5 : kh == 7 ? s2_7x7 : s2_any;    \
        run(out, out_stride, oh, ow, plane, height, width, pad_top, pad_left, w, kh, kw, bias);     \
    }

#endif
