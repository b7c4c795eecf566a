/* f32-dwconv-nhwc, AVX-512 (F + BW + DQ + VL, FMA).
 * Contract (im2row_kernels.h):
 *   out[p*out_stride + ch] = w[ch] + sum_{t<ks} in(p, t)[ch] * w[(1 + t)*channels + ch],
 *   in(p, t) = a[p*a_stride + t] + p*a_step
 * Vectorised across channels.  3x3 (ks = 9, MobileNet's case): per block of 32 channels the
 * 9 x 2 weight vectors stay in registers while the block runs over every pixel, so each FMA
 * needs one load (its input vector) and no weight loads; with a_stride = 0 (a run of pixels
 * at a constant step) the 9 pointers stay the same too.  Other ks: eight pixels at a time,
 * each 16-channel vector of them (then one masked vector for the tail) with eight
 * accumulators, one per pixel, so each weight vector loaded serves eight FMAs (1.125 loads
 * per FMA) and eight independent chains hide the FMA latency; on a run of pixels (a_stride =
 * 0) at 5x5 and 7x7 a kernel row whose taps are one pixel step apart shares its input
 * vectors between the eight pixels (rows_block); the last pixels (fewer than eight) 4, 2 and
 * 1 at a time, several channel vectors and partial sums each (8 chains).  NULL taps are skipped (the 3x3 path needs
 * all nine).  Masked-off lanes are never accessed. */
#if defined(__x86_64__) || defined(_M_X64)
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"
#include "igemm-nhwc-common.h"

/* P pixels x V vectors of 16 channels from channel ch (under `mask`: masked blocks have
 * V = 1); pixel p reads a[p*a_stride + t] + off0 + p*a_step.  S partial sums per output take
 * alternate taps.  Few pixels (edge columns, corners) take more vectors and sums, so that
 * P*V*S = 4-8 independent FMA chains hide the latency and each tap's pointer load and NULL
 * test serve several FMAs.  A NULL tap (the call's padding) is skipped. */
IGEMM_INLINE void block(ptrdiff_t ch, ptrdiff_t channels, ptrdiff_t ks, const float *const *restrict a,
                        ptrdiff_t a_stride, ptrdiff_t a_step, ptrdiff_t off0, const float *restrict w,
                        float *restrict out, ptrdiff_t out_stride, __mmask16 mask, const int P, const int V,
                        const int S)
{
    __m512 acc[8];
#define ACC(p, v, u) acc[((p) * V + (v)) * S + (u)]
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) {
        const __m512 b = _mm512_maskz_loadu_ps(mask, w + ch + 16 * v);
#pragma GCC unroll 8
        for (int p = 0; p < P; p++) {
            ACC(p, v, 0) = b;
#pragma GCC unroll 8
            for (int u = 1; u < S; u++) ACC(p, v, u) = _mm512_setzero_ps();
        }
    }
    for (ptrdiff_t t0 = 0; t0 < ks; t0 += S) {
#pragma GCC unroll 8
        for (int u = 0; u < S; u++) {
            const ptrdiff_t t = t0 + u;
            if (t >= ks || a[t] == NULL) continue;
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) {
                const __m512 wv = _mm512_maskz_loadu_ps(mask, w + (1 + t) * channels + ch + 16 * v);
#pragma GCC unroll 8
                for (int p = 0; p < P; p++)
                    ACC(p, v, u) = _mm512_fmadd_ps(
                        _mm512_maskz_loadu_ps(mask, a[p * a_stride + t] + off0 + p * a_step + ch + 16 * v), wv,
                        ACC(p, v, u));
            }
        }
    }
#pragma GCC unroll 8
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
#pragma GCC unroll 8
            for (int u = 1; u < S; u++) ACC(p, v, 0) = _mm512_add_ps(ACC(p, v, 0), ACC(p, v, u));
            _mm512_mask_storeu_ps(out + p * out_stride + ch + 16 * v, mask, ACC(p, v, 0));
        }
#undef ACC
}

/* Kernel rows of R taps (5x5, 7x7) on a run of pixels (a_stride = 0): where a row's taps are
 * one pixel step apart (a[t + 1] == a[t] + a_step: stride equal to the dilation, as at stride
 * 1 undilated), tap j of pixel p reads the vector tap 0 of pixel p + j reads, so P pixels
 * load P + R - 1 input vectors for P x R FMAs (0.4 loads per FMA at P = 8, R = 5, instead of
 * 1.125).  Bit r of `chained` says kernel row r is such a run; the other rows (padding taps,
 * NULL ones skipped) take a load per FMA. */
enum { ROW_PIXELS = 8 };
IGEMM_INLINE void rows_block(ptrdiff_t ch, ptrdiff_t channels, ptrdiff_t ks, const float *const *restrict a,
                             ptrdiff_t a_step, ptrdiff_t off0, unsigned chained, const float *restrict w,
                             float *restrict out, ptrdiff_t out_stride, __mmask16 mask, const int R)
{
    __m512 acc[ROW_PIXELS];
    const __m512 b = _mm512_maskz_loadu_ps(mask, w + ch);
#pragma GCC unroll 8
    for (int p = 0; p < ROW_PIXELS; p++) acc[p] = b;
    for (ptrdiff_t t0 = 0, r = 0; t0 < ks; t0 += R, r++) {
        const float *wt = w + (1 + t0) * channels + ch;
        if (chained >> r & 1u) {
            const float *x0 = a[t0] + off0 + ch;
            __m512 x[ROW_PIXELS + 7 - 1];
#pragma GCC unroll 14
            for (int k = 0; k < ROW_PIXELS + R - 1; k++) x[k] = _mm512_maskz_loadu_ps(mask, x0 + k * a_step);
#pragma GCC unroll 7
            for (int j = 0; j < R; j++) {
                const __m512 wv = _mm512_maskz_loadu_ps(mask, wt + j * channels);
#pragma GCC unroll 8
                for (int p = 0; p < ROW_PIXELS; p++) acc[p] = _mm512_fmadd_ps(x[p + j], wv, acc[p]);
            }
        } else {
            for (int j = 0; j < R; j++) {
                if (a[t0 + j] == NULL) continue;
                const __m512 wv = _mm512_maskz_loadu_ps(mask, wt + j * channels);
                const float *xj = a[t0 + j] + off0 + ch;
#pragma GCC unroll 8
                for (int p = 0; p < ROW_PIXELS; p++)
                    acc[p] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, xj + p * a_step), wv, acc[p]);
            }
        }
    }
#pragma GCC unroll 8
    for (int p = 0; p < ROW_PIXELS; p++) _mm512_mask_storeu_ps(out + p * out_stride + ch, mask, acc[p]);
}

/* P pixels through every channel.  With R > 0 (a run of ROW_PIXELS pixels, R taps a kernel
 * row) by rows_block(), one vector at a time.  Else by block(): eight pixels one vector at a
 * time; fewer pixels 8/P vectors at a time, then the whole vectors left, then a masked one,
 * each with enough partial sums for 8 accumulators. */
IGEMM_INLINE void pixels(ptrdiff_t channels, ptrdiff_t ks, const float *const *a, ptrdiff_t a_stride,
                         ptrdiff_t a_step, ptrdiff_t off0, const float *w, float *out, ptrdiff_t out_stride,
                         const int P, unsigned chained, const int R)
{
    ptrdiff_t ch = 0;
    if (R > 0 || P >= 8) {
        for (; ch < channels; ch += 16) {
            const __mmask16 mask = channels - ch >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (channels - ch)) - 1u);
            if (R > 0)
                rows_block(ch, channels, ks, a, a_step, off0, chained, w, out, out_stride, mask, R);
            else
                block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride, mask, P, 1, 1);
        }
        return;
    }
    const int V = P >= 4 ? 2 : 4;       /* P*V = 8 (P = 1: 4 vectors, two sums each) */
    for (; ch + 16 * V <= channels; ch += 16 * V)
        block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride, 0xFFFF, P, V, 8 / (P * V));
    switch ((channels - ch) / 16) {
    case 3:     /* (P <= 2 only: at P = 4 the loop above leaves at most one) */
        if (P <= 2) block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride, 0xFFFF, P, 3, P == 1 ? 2 : 1);
        ch += 48;
        break;
    case 2: block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride, 0xFFFF, P, 2, 4 / P); ch += 32; break;
    case 1: block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride, 0xFFFF, P, 1, 8 / P); ch += 16; break;
    default: break;
    }
    if (ch < channels)
        block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride,
              (__mmask16)((1u << (channels - ch)) - 1u), P, 1, 8 / P);
}

/* ks = 9: channels [ch, ch + 16*V) of m pixels (pixel p at a[p*a_stride + t] + off0 +
 * p*a_step), the weights held in registers. */
enum { TAPS9_PIXELS = 16 };
IGEMM_INLINE void taps9_block(ptrdiff_t m, ptrdiff_t ch, ptrdiff_t channels, const float *const *restrict a,
                              ptrdiff_t a_stride, ptrdiff_t a_step, ptrdiff_t off0, const float *restrict w,
                              float *restrict out, ptrdiff_t out_stride, __mmask16 mask, const int V)
{
    __m512 wv[9][2], bias[2];
#pragma GCC unroll 2
    for (int v = 0; v < V; v++) {
        const __mmask16 mv = v == V - 1 ? mask : 0xFFFF;
        bias[v] = _mm512_maskz_loadu_ps(mv, w + ch + 16 * v);
#pragma GCC unroll 9
        for (int t = 0; t < 9; t++) wv[t][v] = _mm512_maskz_loadu_ps(mv, w + (1 + t) * channels + ch + 16 * v);
    }
    for (ptrdiff_t p = 0; p < m; p++, a += a_stride, out += out_stride) {
        const ptrdiff_t off = off0 + p * a_step + ch;
        __m512 acc[2];
#pragma GCC unroll 2
        for (int v = 0; v < V; v++) {
            const __mmask16 mv = v == V - 1 ? mask : 0xFFFF;
            acc[v] = bias[v];
#pragma GCC unroll 9
            for (int t = 0; t < 9; t++)
                acc[v] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mv, a[t] + off + 16 * v), wv[t][v], acc[v]);
            _mm512_mask_storeu_ps(out + ch + 16 * v, mv, acc[v]);
        }
    }
}

void im2row_dwconv_nhwc__avx512(ptrdiff_t m, ptrdiff_t channels, ptrdiff_t ks, const float *const *a,
                                ptrdiff_t a_stride, ptrdiff_t a_step, const float *w, float *out,
                                ptrdiff_t out_stride)
{
    dwconv_nhwc_check_args(m, channels, ks, a, a_stride, a_step, w, out, out_stride);
    if (ks == 9 && dwconv_nhwc_all_taps(a, ks)) {
        /* chunks of TAPS9_PIXELS pixels go through every channel block before the next chunk,
         * so the input is read in runs of whole pixels (C floats) rather than 32-channel
         * slices strided C apart; the weight registers are reloaded per chunk */
        for (ptrdiff_t p0 = 0; p0 < m; p0 += TAPS9_PIXELS) {
            const ptrdiff_t mc = m - p0 < TAPS9_PIXELS ? m - p0 : TAPS9_PIXELS;
            const float *const *ap = a + p0 * a_stride;
            float *op = out + p0 * out_stride;
            const ptrdiff_t off0 = p0 * a_step;
            ptrdiff_t ch = 0;
            for (; ch + 32 <= channels; ch += 32)
                taps9_block(mc, ch, channels, ap, a_stride, a_step, off0, w, op, out_stride, 0xFFFF, 2);
            for (; ch + 16 <= channels; ch += 16)
                taps9_block(mc, ch, channels, ap, a_stride, a_step, off0, w, op, out_stride, 0xFFFF, 1);
            if (ch < channels)
                taps9_block(mc, ch, channels, ap, a_stride, a_step, off0, w, op, out_stride,
                            (__mmask16)((1u << (channels - ch)) - 1u), 1);
        }
        return;
    }
    ptrdiff_t p = 0;
    /* a run of pixels with 5 x 5 or 7 x 7 taps (R taps a kernel row, ks / R rows) */
    const ptrdiff_t R = ks == 25 ? 5 : ks == 49 ? 7 : 0;
    const unsigned chained = a_stride == 0 && R > 0 && a_step > 0 ? dwconv_nhwc_chained_rows(a, ks, a_step, R) : 0u;
    if (chained != 0) {
        for (; p + ROW_PIXELS <= m; p += ROW_PIXELS) {
            if (R == 5) pixels(channels, ks, a, 0, a_step, p * a_step, w, out + p * out_stride, out_stride, ROW_PIXELS, chained, 5);
            else pixels(channels, ks, a, 0, a_step, p * a_step, w, out + p * out_stride, out_stride, ROW_PIXELS, chained, 7);
        }
    }
    for (; p + 8 <= m; p += 8)
        pixels(channels, ks, a + p * a_stride, a_stride, a_step, p * a_step, w, out + p * out_stride, out_stride, 8, 0, 0);
    if (p + 4 <= m) {
        pixels(channels, ks, a + p * a_stride, a_stride, a_step, p * a_step, w, out + p * out_stride, out_stride, 4, 0, 0);
        p += 4;
    }
    if (p + 2 <= m) {
        pixels(channels, ks, a + p * a_stride, a_stride, a_step, p * a_step, w, out + p * out_stride, out_stride, 2, 0, 0);
        p += 2;
    }
    if (p < m)
        pixels(channels, ks, a + p * a_stride, a_stride, a_step, p * a_step, w, out + p * out_stride, out_stride, 1, 0, 0);
}
#endif
