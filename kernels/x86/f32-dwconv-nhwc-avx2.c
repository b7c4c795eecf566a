/* f32-dwconv-nhwc, AVX2 + FMA.
 * Contract (im2row_kernels.h):
 *   out[p*out_stride + ch] = w[ch] + sum_{t<ks} in(p, t)[ch] * w[(1 + t)*channels + ch],
 *   in(p, t) = a[p*a_stride + t] + p*a_step
 * Vectorised across channels.  3x3 (ks = 9): per 8 channels the 9 weight vectors stay in
 * registers while the block runs over every pixel (two at a time), so each FMA needs one load.
 * Other ks: eight pixels at a time, each 8-channel vector of them (then one masked vector)
 * with eight accumulators, one per pixel, so each weight vector loaded serves eight FMAs and
 * eight independent chains hide the FMA latency; on a run of pixels (a_stride = 0) at 5x5 and
 * 7x7 a kernel row whose taps are one pixel step apart shares its input vectors between four
 * pixels (rows_block); the last pixels (fewer than eight) 4, 2 and 1 at a time, several
 * channel vectors and partial sums each (8 chains).  NULL taps are skipped (the 3x3 path
 * needs all nine).  maskload/maskstore: masked-off lanes are never accessed. */
#if defined(__x86_64__) || defined(_M_X64)
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"
#include "igemm-nhwc-common.h"

IGEMM_INLINE __m256 load(const float *p, __m256i mask, const int MASKED)
{
    return MASKED ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
}

IGEMM_INLINE void store(float *p, __m256i mask, __m256 v, const int MASKED)
{
    if (MASKED) _mm256_maskstore_ps(p, mask, v);
    else _mm256_storeu_ps(p, v);
}

/* P pixels x V vectors of 8 channels from channel ch (MASKED: V = 1, under mask); pixel p
 * reads a[p*a_stride + t] + off0 + p*a_step.  S partial sums per output take alternate taps.
 * Few pixels (edge columns, corners) take more vectors and sums, so that P*V*S = 4-8
 * independent FMA chains hide the latency and each tap's pointer load and NULL test serve
 * several FMAs.  A NULL tap (the call's padding) is skipped. */
IGEMM_INLINE void block(ptrdiff_t ch, ptrdiff_t channels, ptrdiff_t ks, const float *const *restrict a,
                        ptrdiff_t a_stride, ptrdiff_t a_step, ptrdiff_t off0, const float *restrict w,
                        float *restrict out, ptrdiff_t out_stride, __m256i mask, const int P, const int V,
                        const int S, const int MASKED)
{
    __m256 acc[8];
#define ACC(p, v, u) acc[((p) * V + (v)) * S + (u)]
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) {
        const __m256 b = load(w + ch + 8 * v, mask, MASKED);
#pragma GCC unroll 8
        for (int p = 0; p < P; p++) {
            ACC(p, v, 0) = b;
#pragma GCC unroll 8
            for (int u = 1; u < S; u++) ACC(p, v, u) = _mm256_setzero_ps();
        }
    }
    for (ptrdiff_t t0 = 0; t0 < ks; t0 += S) {
#pragma GCC unroll 8
        for (int u = 0; u < S; u++) {
            const ptrdiff_t t = t0 + u;
            if (t >= ks || a[t] == NULL) continue;
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) {
                const __m256 wv = load(w + (1 + t) * channels + ch + 8 * v, mask, MASKED);
#pragma GCC unroll 8
                for (int p = 0; p < P; p++)
                    ACC(p, v, u) = _mm256_fmadd_ps(
                        load(a[p * a_stride + t] + off0 + p * a_step + ch + 8 * v, mask, MASKED), wv, ACC(p, v, u));
            }
        }
    }
#pragma GCC unroll 8
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
#pragma GCC unroll 8
            for (int u = 1; u < S; u++) ACC(p, v, 0) = _mm256_add_ps(ACC(p, v, 0), ACC(p, v, u));
            store(out + p * out_stride + ch + 8 * v, mask, ACC(p, v, 0), MASKED);
        }
#undef ACC
}

/* Kernel rows of R taps (5x5, 7x7) on a run of pixels (a_stride = 0), as the AVX-512 file's
 * rows_block: where a row's taps are one pixel step apart (bit r of `chained`), tap j of
 * pixel p reads the vector tap 0 of pixel p + j reads, so ROW_PIXELS pixels load
 * ROW_PIXELS + R - 1 input vectors for ROW_PIXELS x R FMAs.  Four pixels, not eight: the
 * 4 accumulators and up to 10 input vectors fill the 16 ymm registers.  Other rows (padding
 * taps, NULL ones skipped) take a load per FMA. */
enum { ROW_PIXELS = 4 };
IGEMM_INLINE void rows_block(ptrdiff_t ch, ptrdiff_t channels, ptrdiff_t ks, const float *const *restrict a,
                             ptrdiff_t a_step, ptrdiff_t off0, unsigned chained, const float *restrict w,
                             float *restrict out, ptrdiff_t out_stride, __m256i mask, const int R, const int MASKED)
{
    __m256 acc[ROW_PIXELS];
    const __m256 b = load(w + ch, mask, MASKED);
#pragma GCC unroll 4
    for (int p = 0; p < ROW_PIXELS; p++) acc[p] = b;
    for (ptrdiff_t t0 = 0, r = 0; t0 < ks; t0 += R, r++) {
        const float *wt = w + (1 + t0) * channels + ch;
        if (chained >> r & 1u) {
            const float *x0 = a[t0] + off0 + ch;
            __m256 x[ROW_PIXELS + 7 - 1];
#pragma GCC unroll 10
            for (int k = 0; k < ROW_PIXELS + R - 1; k++) x[k] = load(x0 + k * a_step, mask, MASKED);
#pragma GCC unroll 7
            for (int j = 0; j < R; j++) {
                const __m256 wv = load(wt + j * channels, mask, MASKED);
#pragma GCC unroll 4
                for (int p = 0; p < ROW_PIXELS; p++) acc[p] = _mm256_fmadd_ps(x[p + j], wv, acc[p]);
            }
        } else {
            for (int j = 0; j < R; j++) {
                if (a[t0 + j] == NULL) continue;
                const __m256 wv = load(wt + j * channels, mask, MASKED);
                const float *xj = a[t0 + j] + off0 + ch;
#pragma GCC unroll 4
                for (int p = 0; p < ROW_PIXELS; p++)
                    acc[p] = _mm256_fmadd_ps(load(xj + p * a_step, mask, MASKED), wv, acc[p]);
            }
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < ROW_PIXELS; p++) store(out + p * out_stride + ch, mask, acc[p], MASKED);
}

IGEMM_INLINE __m256i lanes_below(ptrdiff_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* P pixels through every channel: eight pixels one vector at a time; fewer pixels 8/P
 * vectors at a time, then the whole vectors left, then a masked one, each with enough partial
 * sums for 8 accumulators. */
IGEMM_INLINE void pixels(ptrdiff_t channels, ptrdiff_t ks, const float *const *a, ptrdiff_t a_stride,
                         ptrdiff_t a_step, ptrdiff_t off0, const float *w, float *out, ptrdiff_t out_stride,
                         const int P)
{
    const __m256i all = _mm256_set1_epi32(-1);
    ptrdiff_t ch = 0;
    if (P >= 8) {
        for (; ch + 8 <= channels; ch += 8)
            block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride, all, P, 1, 1, 0);
    } else {
        const int V = P >= 4 ? 2 : 4;   /* P*V = 8 (P = 1: 4 vectors, two sums each) */
        for (; ch + 8 * V <= channels; ch += 8 * V)
            block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride, all, P, V, 8 / (P * V), 0);
        switch ((channels - ch) / 8) {
        case 3:     /* (P <= 2 only: at P = 4 the loop above leaves at most one) */
            if (P <= 2) block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride, all, P, 3, P == 1 ? 2 : 1, 0);
            ch += 24;
            break;
        case 2: block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride, all, P, 2, 4 / P, 0); ch += 16; break;
        case 1: block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride, all, P, 1, 8 / P, 0); ch += 8; break;
        default: break;
        }
    }
    if (ch < channels)
        block(ch, channels, ks, a, a_stride, a_step, off0, w, out, out_stride, lanes_below(channels - ch), P, 1,
              P >= 8 ? 1 : 8 / P, 1);
}

/* ROW_PIXELS pixels of a run through every channel by rows_block (R taps a kernel row). */
IGEMM_INLINE void run_pixels(ptrdiff_t channels, ptrdiff_t ks, const float *const *a, ptrdiff_t a_step,
                             ptrdiff_t off0, unsigned chained, const float *w, float *out, ptrdiff_t out_stride,
                             const int R)
{
    const __m256i all = _mm256_set1_epi32(-1);
    ptrdiff_t ch = 0;
    for (; ch + 8 <= channels; ch += 8)
        rows_block(ch, channels, ks, a, a_step, off0, chained, w, out, out_stride, all, R, 0);
    if (ch < channels)
        rows_block(ch, channels, ks, a, a_step, off0, chained, w, out, out_stride, lanes_below(channels - ch), R, 1);
}

/* ks = 9: channels [ch, ch + 8) of m pixels (pixel p at a[p*a_stride + t] + off0 +
 * p*a_step), two pixels per step, weights in registers. */
enum { TAPS9_PIXELS = 16 };
IGEMM_INLINE void taps9_block(ptrdiff_t m, ptrdiff_t ch, ptrdiff_t channels, const float *const *restrict a,
                              ptrdiff_t a_stride, ptrdiff_t a_step, ptrdiff_t off0, const float *restrict w,
                              float *restrict out, ptrdiff_t out_stride, __m256i mask, const int MASKED)
{
    __m256 wv[9];
    const __m256 bias = load(w + ch, mask, MASKED);
#pragma GCC unroll 9
    for (int t = 0; t < 9; t++) wv[t] = load(w + (1 + t) * channels + ch, mask, MASKED);
    ptrdiff_t p = 0;
    for (; p + 2 <= m; p += 2, out += 2 * out_stride) {
        const float *const *a0 = a + p * a_stride, *const *a1 = a0 + a_stride;
        const ptrdiff_t off = off0 + p * a_step + ch;
        __m256 acc0 = bias, acc1 = bias;
#pragma GCC unroll 9
        for (int t = 0; t < 9; t++) {
            acc0 = _mm256_fmadd_ps(load(a0[t] + off, mask, MASKED), wv[t], acc0);
            acc1 = _mm256_fmadd_ps(load(a1[t] + off + a_step, mask, MASKED), wv[t], acc1);
        }
        store(out + ch, mask, acc0, MASKED);
        store(out + out_stride + ch, mask, acc1, MASKED);
    }
    if (p < m) {
        const float *const *a0 = a + p * a_stride;
        const ptrdiff_t off = off0 + p * a_step + ch;
        __m256 acc = bias;
#pragma GCC unroll 9
        for (int t = 0; t < 9; t++) acc = _mm256_fmadd_ps(load(a0[t] + off, mask, MASKED), wv[t], acc);
        store(out + ch, mask, acc, MASKED);
    }
}

void im2row_dwconv_nhwc__avx2(ptrdiff_t m, ptrdiff_t channels, ptrdiff_t ks, const float *const *a,
                              ptrdiff_t a_stride, ptrdiff_t a_step, const float *w, float *out,
                              ptrdiff_t out_stride)
{
    dwconv_nhwc_check_args(m, channels, ks, a, a_stride, a_step, w, out, out_stride);
    if (ks == 9 && dwconv_nhwc_all_taps(a, ks)) {
        /* chunks of pixels through every channel block, so the input is read in whole pixels */
        const __m256i all = _mm256_set1_epi32(-1);
        for (ptrdiff_t p0 = 0; p0 < m; p0 += TAPS9_PIXELS) {
            const ptrdiff_t mc = m - p0 < TAPS9_PIXELS ? m - p0 : TAPS9_PIXELS;
            const float *const *ap = a + p0 * a_stride;
            float *op = out + p0 * out_stride;
            ptrdiff_t ch = 0;
            for (; ch + 8 <= channels; ch += 8)
                taps9_block(mc, ch, channels, ap, a_stride, a_step, p0 * a_step, w, op, out_stride, all, 0);
            if (ch < channels)
                taps9_block(mc, ch, channels, ap, a_stride, a_step, p0 * a_step, w, op, out_stride,
                            lanes_below(channels - ch), 1);
        }
        return;
    }
    ptrdiff_t p = 0;
    /* a run of pixels with 5 x 5 or 7 x 7 taps (R taps a kernel row, ks / R rows) */
    const ptrdiff_t R = ks == 25 ? 5 : ks == 49 ? 7 : 0;
    const unsigned chained = a_stride == 0 && R > 0 && a_step > 0 ? dwconv_nhwc_chained_rows(a, ks, a_step, R) : 0u;
    if (chained != 0) {
        for (; p + ROW_PIXELS <= m; p += ROW_PIXELS) {
            if (R == 5) run_pixels(channels, ks, a, a_step, p * a_step, chained, w, out + p * out_stride, out_stride, 5);
            else run_pixels(channels, ks, a, a_step, p * a_step, chained, w, out + p * out_stride, out_stride, 7);
        }
    }
    for (; p + 8 <= m; p += 8)
        pixels(channels, ks, a + p * a_stride, a_stride, a_step, p * a_step, w, out + p * out_stride, out_stride, 8);
    if (p + 4 <= m) {
        pixels(channels, ks, a + p * a_stride, a_stride, a_step, p * a_step, w, out + p * out_stride, out_stride, 4);
        p += 4;
    }
    if (p + 2 <= m) {
        pixels(channels, ks, a + p * a_stride, a_stride, a_step, p * a_step, w, out + p * out_stride, out_stride, 2);
        p += 2;
    }
    if (p < m)
        pixels(channels, ks, a + p * a_stride, a_stride, a_step, p * a_step, w, out + p * out_stride, out_stride, 1);
}
#endif
