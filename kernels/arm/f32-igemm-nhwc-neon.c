/* f32-igemm-nhwc, AArch64 ASIMD + FMA (no SVE, no FP16, no dot product).
 *
 * Contract (kernels/include/im2row_kernels.h):
 *   out[p*ldc + j] = bias[j] + sum_{t<ks, ch<kc} (a[p*ks + t] + a_offset)[ch] * W[t*kc + ch][j]
 *   weights packed by im2row_pack_igemm_nhwc with nr = im2row_igemm_nhwc_nr__neon = 8.
 *
 * Register tile: 8 pixels x 8 channels = 16 q accumulators; per 4 channels each pixel loads
 * one vector of input (8 registers) used by lane (fmla .s[l]) against 4 weight rows of 2
 * vectors: 26 of the 32 q registers.  Channel tails (kc % 4) broadcast one float.  Column
 * tails of 1-4 use one vector; partial vectors are stored lane by lane.
 */
#if defined(__aarch64__)
#include <stddef.h>
#include <arm_neon.h>

#include "im2row_kernels.h"
#include "igemm-nhwc-common.h"

enum { VW = 4, MR = 8, NR = 8 };
const ptrdiff_t im2row_igemm_nhwc_mr__neon = MR;
const ptrdiff_t im2row_igemm_nhwc_nr__neon = NR;

IGEMM_INLINE void store_cols(float *c, float32x4_t v, ptrdiff_t n)
{
    if (n >= 4) { vst1q_f32(c, v); return; }
    if (n >= 1) vst1q_lane_f32(c, v, 0);
    if (n >= 2) vst1q_lane_f32(c + 1, v, 1);
    if (n >= 3) vst1q_lane_f32(c + 2, v, 2);
}

#define LANE_STEP(L)                                                                          \
    do {                                                                                      \
        float32x4_t vb_[2];                                                                   \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) vb_[v] = vld1q_f32(w + 4 * v);   \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                   \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                              \
                acc[r][v] = vfmaq_laneq_f32(acc[r][v], vb_[v], va[r], L);                     \
        w += NR;                                                                              \
    } while (0)

IGEMM_INLINE float32x4_t load_cols(const float *c, ptrdiff_t n)
{
    if (n >= 4) return vld1q_f32(c);
    float32x4_t v = vdupq_n_f32(0.0f);
    if (n >= 1) v = vld1q_lane_f32(c, v, 0);
    if (n >= 2) v = vld1q_lane_f32(c + 1, v, 1);
    if (n >= 3) v = vld1q_lane_f32(c + 2, v, 2);
    return v;
}

/* R pixels (pointer rows of `a`, stride ks) x NV vectors of 4 columns, `cols` columns in all,
 * over taps x chans k steps; from the bias row, or from what c holds where bias is NULL. */
IGEMM_INLINE void tile(ptrdiff_t ks, ptrdiff_t taps, ptrdiff_t chans, const float *const *restrict a,
                       ptrdiff_t a_offset, const float *restrict bias, const float *restrict w,
                       float *restrict c, ptrdiff_t ldc, ptrdiff_t cols, const int R, const int NV)
{
    float32x4_t acc[MR][2];
    if (bias != NULL) {
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            const float32x4_t b = vld1q_f32(bias + 4 * v);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) acc[r][v] = b;
        }
    } else {
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            if (NV == 2) acc[r][0] = vld1q_f32(c + r * ldc);
            acc[r][NV - 1] = load_cols(c + r * ldc + 4 * (NV - 1), cols - 4 * (NV - 1));
        }
    }
    for (ptrdiff_t t = 0; t < taps; t++) {
        const float *x[MR];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) x[r] = a[r * ks + t] + a_offset;
        ptrdiff_t ch = 0;
        for (; ch + 4 <= chans; ch += 4) {
            float32x4_t va[MR];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) va[r] = vld1q_f32(x[r] + ch);
            LANE_STEP(0);
            LANE_STEP(1);
            LANE_STEP(2);
            LANE_STEP(3);
        }
        for (; ch < chans; ch++, w += NR) {
            float32x4_t vb[2];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) vb[v] = vld1q_f32(w + 4 * v);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const float32x4_t xa = vld1q_dup_f32(x[r] + ch);
#pragma GCC unroll 2
                for (int v = 0; v < NV; v++) acc[r][v] = vfmaq_f32(acc[r][v], xa, vb[v]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (NV == 2) vst1q_f32(c + r * ldc, acc[r][0]);
        store_cols(c + r * ldc + 4 * (NV - 1), acc[r][NV - 1], cols - 4 * (NV - 1));
    }
}

IGEMM_NHWC_ENTRY(im2row_igemm_nhwc__neon)
#endif
