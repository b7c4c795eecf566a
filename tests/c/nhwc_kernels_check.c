/* Standalone checker for the channels-last kernels (f32-igemm-nhwc, f32-dwconv-nhwc).
 *
 *   nhwc_kernels_check [check]   every compiled variant usable on this CPU (scalar included)
 *                                against a naive double-precision convolution on random
 *                                shapes (groups, strides, dilation, asymmetric padding, tails
 *                                of every tile size); exit status 1 on any mismatch.
 *   nhwc_kernels_check bench     GF/s of igemm-nhwc and GB/s of dwconv-nhwc per variant on
 *                                a few ResNet / MobileNet layers (one image, one thread).
 *
 * The input, the zero vector, the packed weights and the output sit flush against PROT_NONE
 * guard pages, so a read or write past what the contract allows faults; output elements the
 * contract does not cover hold a sentinel that must survive.  Built by
 * tests/c/build_nhwc_kernels.sh; links the kernel files directly (no dispatch table), so it
 * also runs variants the current CPU would not pick when it supports them. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "im2row_kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
void im2row_igemm_nhwc__avx2(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                             const float *const *, ptrdiff_t, const float *, float *, ptrdiff_t);
void im2row_igemm_nhwc__avx512(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                               const float *const *, ptrdiff_t, const float *, float *, ptrdiff_t);
void im2row_dwconv_nhwc__avx2(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *const *, ptrdiff_t, ptrdiff_t,
                              const float *, float *, ptrdiff_t);
void im2row_dwconv_nhwc__avx512(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *const *, ptrdiff_t, ptrdiff_t,
                                const float *, float *, ptrdiff_t);
extern const ptrdiff_t im2row_igemm_nhwc_mr__avx2, im2row_igemm_nhwc_nr__avx2;
extern const ptrdiff_t im2row_igemm_nhwc_mr__avx512, im2row_igemm_nhwc_nr__avx512;
#endif
#if defined(__aarch64__)
void im2row_igemm_nhwc__neon(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                             const float *const *, ptrdiff_t, const float *, float *, ptrdiff_t);
void im2row_dwconv_nhwc__neon(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *const *, ptrdiff_t, ptrdiff_t,
                              const float *, float *, ptrdiff_t);
extern const ptrdiff_t im2row_igemm_nhwc_mr__neon, im2row_igemm_nhwc_nr__neon;
#endif

typedef struct {
    const char *isa;
    int usable;
    im2row_igemm_nhwc_fn igemm;
    ptrdiff_t mr, nr;
    im2row_dwconv_nhwc_fn dwconv;
} variant;

static variant g_var[4];
static int g_nvar;

static void init_variants(void)
{
    g_var[g_nvar++] = (variant){"scalar", 1, im2row_igemm_nhwc__scalar, im2row_igemm_nhwc_mr__scalar,
                                im2row_igemm_nhwc_nr__scalar, im2row_dwconv_nhwc__scalar};
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    g_var[g_nvar++] = (variant){"avx2", avx2, im2row_igemm_nhwc__avx2, im2row_igemm_nhwc_mr__avx2,
                                im2row_igemm_nhwc_nr__avx2, im2row_dwconv_nhwc__avx2};
    g_var[g_nvar++] = (variant){"avx512", avx512, im2row_igemm_nhwc__avx512, im2row_igemm_nhwc_mr__avx512,
                                im2row_igemm_nhwc_nr__avx512, im2row_dwconv_nhwc__avx512};
#endif
#if defined(__aarch64__)
    g_var[g_nvar++] = (variant){"neon", 1, im2row_igemm_nhwc__neon, im2row_igemm_nhwc_mr__neon,
                                im2row_igemm_nhwc_nr__neon, im2row_dwconv_nhwc__neon};
#endif
}

/* ---- helpers ------------------------------------------------------------------------ */

#include "check-util.h"

/* every buffer here sits flush against the guard page after it */
static guarded galloc1(size_t n) { return galloc(n, 1); }

static int g_fail;
#define FAIL(...) do { if (g_fail++ < 20) { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); } } while (0)
static const float SENTINEL = -12345.0f;

/* A convolution on an NHWC image, in the form the kernels see it. */
typedef struct {
    ptrdiff_t C, H, W, OC, groups, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, OH, OW;
} conv;

/* One pointer per (output pixel, tap) into x (NHWC), `zero` for taps in the padding. */
static void build_indirection(const conv *g, const float *x, const float *zero, const float **a)
{
    for (ptrdiff_t oh = 0; oh < g->OH; oh++)
        for (ptrdiff_t ow = 0; ow < g->OW; ow++)
            for (ptrdiff_t i = 0; i < g->kh; i++)
                for (ptrdiff_t j = 0; j < g->kw; j++) {
                    ptrdiff_t ih = oh * g->sh - g->pt + i * g->dh, iw = ow * g->sw - g->pl + j * g->dw;
                    *a++ = (ih >= 0 && ih < g->H && iw >= 0 && iw < g->W) ? x + (ih * g->W + iw) * g->C : zero;
                }
}

/* ---- f32-igemm-nhwc ----------------------------------------------------------------- */

static void igemm_case(const conv *g)
{
    const ptrdiff_t Cg = g->C / g->groups, OCg = g->OC / g->groups, ks = g->kh * g->kw, K = ks * Cg;
    const ptrdiff_t M = g->OH * g->OW;
    guarded gx = galloc1((size_t)(g->H * g->W * g->C)), gz = galloc1((size_t)g->C);
    for (ptrdiff_t i = 0; i < g->H * g->W * g->C; i++) gx.p[i] = rfloat();
    for (ptrdiff_t i = 0; i < g->C; i++) gz.p[i] = 0.0f;
    const float **a = malloc(sizeof(*a) * (size_t)(M * ks));
    build_indirection(g, gx.p, gz.p, a);
    /* weights [OC][kh][kw][Cg] (the kernels' k order), bias [OC] */
    float *w = malloc(sizeof(float) * (size_t)(g->OC * K)), *bias = malloc(sizeof(float) * (size_t)g->OC);
    for (ptrdiff_t i = 0; i < g->OC * K; i++) w[i] = rfloat();
    for (ptrdiff_t i = 0; i < g->OC; i++) bias[i] = rfloat();
    /* the box of taps each pixel's call summed: box[p] = {tap0, ntaps, tap_rows, row_step} */
    ptrdiff_t (*box)[4] = malloc(sizeof(*box) * (size_t)M);
    guarded gout = galloc1((size_t)(M * g->OC));
    for (int v = 0; v < g_nvar; v++) {
        if (!g_var[v].usable) continue;
        const ptrdiff_t nr = g_var[v].nr, panels = (OCg + nr - 1) / nr;
        for (ptrdiff_t grp = 0; grp < g->groups; grp++) {
            guarded gw = galloc1((size_t)(panels * nr * (1 + K)));
            im2row_pack_igemm_nhwc(gw.p, w + grp * OCg * K, K, bias + grp * OCg, OCg, K, nr);
            for (ptrdiff_t i = 0; i < M * g->OC; i++) gout.p[i] = SENTINEL;
            /* pixels in random chunks, so every tail length of the pixel tile occurs */
            for (ptrdiff_t p0 = 0, m; p0 < M; p0 += m) {
                m = rint_in(1, 3 * g_var[v].mr);
                if (m > M - p0) m = M - p0;
                /* k slices of every size: whole taps, parts of a tap's channels, all of k */
                const ptrdiff_t kslice = rnd() % 4 == 0 ? 0 : rint_in(1, K + 2);
                /* every tap a third of the time, else a random run of them, or a box (kernel
                 * columns [j0, j1) of kernel rows [i0, i1), as for the pixels at a row's
                 * ends); the chunk's own table, flush against a guard page, with NULL for
                 * the taps outside the box (a kernel that reads one faults) */
                ptrdiff_t tap0 = 0, ntaps = ks, tap_rows = 1, row_step = ks;
                const unsigned pick = rnd() % 3;
                if (pick == 1) tap0 = rint_in(0, ks - 1), ntaps = rint_in(1, ks - tap0);
                if (pick == 2) {
                    const ptrdiff_t i0 = rint_in(0, g->kh - 1), i1 = rint_in(i0 + 1, g->kh);
                    const ptrdiff_t j0 = rint_in(0, g->kw - 1), j1 = rint_in(j0 + 1, g->kw);
                    tap0 = i0 * g->kw + j0, ntaps = j1 - j0, tap_rows = i1 - i0, row_step = g->kw;
                }
                guarded gt = galloc1((size_t)(m * ks) * sizeof(*a) / sizeof(float));
                const float **table = (const float **)(void *)gt.p;
                for (ptrdiff_t i = 0; i < m * ks; i++) {
                    const ptrdiff_t t = i % ks - tap0, r = t >= 0 ? t / row_step : -1, q = t - r * row_step;
                    table[i] = r >= 0 && r < tap_rows && q < ntaps ? a[p0 * ks + i] : NULL;
                }
                for (ptrdiff_t p = p0; p < p0 + m; p++)
                    box[p][0] = tap0, box[p][1] = ntaps, box[p][2] = tap_rows, box[p][3] = row_step;
                g_var[v].igemm(m, OCg, ks, Cg, kslice, tap0, ntaps, tap_rows, row_step, table, grp * Cg,
                               gw.p, gout.p + p0 * g->OC + grp * OCg, g->OC);
                gfree(gt);
            }
            for (ptrdiff_t p = 0; p < M; p++)
                for (ptrdiff_t oc = 0; oc < g->OC; oc++) {
                    float got = gout.p[p * g->OC + oc];
                    if (oc / OCg != grp) {
                        if (got != SENTINEL) FAIL("igemm[%s] wrote outside its group's slice", g_var[v].isa);
                        continue;
                    }
                    double want = bias[oc], mag = fabs(bias[oc]);
                    for (ptrdiff_t r = 0; r < box[p][2]; r++)
                        for (ptrdiff_t t = box[p][0] + r * box[p][3]; t < box[p][0] + r * box[p][3] + box[p][1]; t++)
                            for (ptrdiff_t c = 0; c < Cg; c++) {
                                double x = (double)a[p * ks + t][grp * Cg + c] * w[oc * K + t * Cg + c];
                                want += x, mag += fabs(x);
                            }
                    double tol = 4e-7 * (double)(K + 2) * mag + 1e-30;
                    if (!(fabs(got - want) <= tol))
                        FAIL("igemm[%s] C=%td OC=%td g=%td k=%tdx%td s=%td,%td d=%td,%td pad=%td,%td,%td,%td "
                             "HxW=%tdx%td: out[%td][%td]=%.8g want %.8g",
                             g_var[v].isa, g->C, g->OC, g->groups, g->kh, g->kw, g->sh, g->sw, g->dh, g->dw,
                             g->pt, g->pl, g->pb, g->pr, g->H, g->W, p, oc, got, want);
                }
            gfree(gw);
        }
    }
    gfree(gout), gfree(gx), gfree(gz);
    free(a), free(w), free(bias), free(box);
}

static int random_conv(conv *g, int depthwise)
{
    g->groups = depthwise ? 1 : (rnd() % 3 == 0 ? rint_in(2, 4) : 1);
    g->C = depthwise ? rint_in(1, 80) : g->groups * rint_in(1, (rnd() & 1) ? 6 : 24);
    g->OC = depthwise ? g->C : g->groups * rint_in(1, (rnd() & 1) ? 20 : 70);
    g->kh = rint_in(1, 4), g->kw = rint_in(1, 4);
    if (depthwise && rnd() % 3 == 0) g->kh = g->kw = 3;   /* the 3x3 paths */
    if (depthwise && rnd() % 4 == 0) g->kh = g->kw = 5 + 2 * (int)(rnd() & 1);  /* 5x5, 7x7 rows */
    g->sh = rint_in(1, 3), g->sw = rint_in(1, 3);
    g->dh = rint_in(1, 2), g->dw = rint_in(1, 2);
    g->pt = rint_in(0, 2), g->pl = rint_in(0, 2), g->pb = rint_in(0, 2), g->pr = rint_in(0, 2);
    g->H = rint_in(1, 11), g->W = rint_in(1, depthwise ? 24 : 11);   /* runs past 8 pixels */
    ptrdiff_t eh = g->H + g->pt + g->pb - g->dh * (g->kh - 1), ew = g->W + g->pl + g->pr - g->dw * (g->kw - 1);
    if (eh < 1 || ew < 1) return 0;
    g->OH = (eh - 1) / g->sh + 1, g->OW = (ew - 1) / g->sw + 1;
    return 1;
}

static void check_igemm(void)
{
    int cases = 0;
    while (cases < 400) {
        conv g;
        if (!random_conv(&g, 0)) continue;
        igemm_case(&g);
        cases++;
    }
    /* kernel-row pointers (kc = kw*C, the padded-rows form): a 1 x 1 "tap" over wide vectors */
    for (ptrdiff_t kc = 1; kc <= 40; kc += 3) {
        conv g = {kc, 5, 7, (ptrdiff_t)rint_in(1, 70), 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 5, 7};
        igemm_case(&g);
        cases++;
    }
    printf("igemm-nhwc: %d shapes\n", cases);
}

/* ---- f32-dwconv-nhwc ---------------------------------------------------------------- */

/* The reference of output pixel (oh, ow), channel c, and the magnitude bound of its error. */
static double dwconv_ref(const conv *g, const float *x, const float *w, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t c,
                         double *mag)
{
    const ptrdiff_t C = g->C;
    double s = w[c], s_abs = fabs(w[c]);
    for (ptrdiff_t i = 0; i < g->kh; i++)
        for (ptrdiff_t j = 0; j < g->kw; j++) {
            ptrdiff_t ih = oh * g->sh - g->pt + i * g->dh, iw = ow * g->sw - g->pl + j * g->dw;
            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
            double v = (double)x[(ih * g->W + iw) * C + c] * w[(1 + i * g->kw + j) * C + c];
            s += v, s_abs += fabs(v);
        }
    *mag = s_abs;
    return s;
}

static void dwconv_case(const conv *g)
{
    const ptrdiff_t C = g->C, ks = g->kh * g->kw, M = g->OH * g->OW, stride = C + rint_in(0, 5);
    const ptrdiff_t zero_len = g->OW * g->sw * C + C;   /* a zero row: room for a run's step */
    guarded gx = galloc1((size_t)(g->H * g->W * C)), gz = galloc1((size_t)zero_len), gw = galloc1((size_t)((1 + ks) * C));
    for (ptrdiff_t i = 0; i < g->H * g->W * C; i++) gx.p[i] = rfloat();
    for (ptrdiff_t i = 0; i < zero_len; i++) gz.p[i] = 0.0f;
    for (ptrdiff_t i = 0; i < (1 + ks) * C; i++) gw.p[i] = rfloat();
    const float **a = malloc(sizeof(*a) * (size_t)(M * ks));
    build_indirection(g, gx.p, gz.p, a);
    const size_t out_len = (size_t)((M - 1) * stride + C);
    guarded gout = galloc1(out_len);
    for (int v = 0; v < g_nvar; v++) {
        if (!g_var[v].usable) continue;
        for (int mode = 0; mode < 2; mode++) {
            for (size_t i = 0; i < out_len; i++) gout.p[i] = SENTINEL;
            /* Chunks and rows go last to first: a kernel that writes a pixel past its own then
             * spoils output already computed, instead of output that is written again later. */
            if (mode == 0) {          /* a table, pixels in random chunks */
                ptrdiff_t ends[4096], nchunks = 0;
                for (ptrdiff_t p0 = 0, m; p0 < M; p0 += m) {
                    m = rint_in(1, 19);   /* every pixel-group cascade (8, 4, 2, 1) and chunk */
                    if (m > M - p0) m = M - p0;
                    if (nchunks < 4096) ends[nchunks++] = p0;
                }
                for (ptrdiff_t i = nchunks - 1; i >= 0; i--) {
                    const ptrdiff_t p0 = ends[i], m = (i + 1 < nchunks ? ends[i + 1] : M) - p0;
                    /* the chunk's own table, flush against a guard page: a pixel read past
                     * the chunk faults instead of reading the next chunk's (right) pointers */
                    const size_t ptr_floats = (size_t)(m * ks) * sizeof(*a) / sizeof(float);
                    guarded gt = galloc1(ptr_floats);
                    memcpy(gt.p, a + p0 * ks, (size_t)(m * ks) * sizeof(*a));
                    /* half the time the taps in the padding for every pixel of the chunk are
                     * NULL (skipped), the others stay on the zero row */
                    if (rnd() % 2) {
                        const float **tab = (const float **)(void *)gt.p;
                        for (ptrdiff_t t = 0; t < ks; t++) {
                            int pad = 1;
                            for (ptrdiff_t q = 0; q < m; q++) pad &= tab[q * ks + t] == gz.p;
                            for (ptrdiff_t q = 0; pad && q < m; q++) tab[q * ks + t] = NULL;
                        }
                    }
                    g_var[v].dwconv(m, C, ks, (const float *const *)(void *)gt.p, ks, 0, gw.p,
                                    gout.p + p0 * stride, stride);
                    gfree(gt);
                }
            } else {                  /* per output row, the run of columns whose taps are all in the row */
                for (ptrdiff_t oh = g->OH - 1; oh >= 0; oh--) {
                    ptrdiff_t lo = 0, hi = g->OW;
                    while (lo < hi && lo * g->sw - g->pl < 0) lo++;
                    while (hi > lo && (hi - 1) * g->sw - g->pl + (g->kw - 1) * g->dw >= g->W) hi--;
                    if (lo == hi) continue;
                    const float *run[64];
                    const float *pad_row = rnd() % 2 ? gz.p : NULL;   /* NULL: skipped */
                    for (ptrdiff_t i = 0; i < g->kh; i++)
                        for (ptrdiff_t j = 0; j < g->kw; j++) {
                            ptrdiff_t ih = oh * g->sh - g->pt + i * g->dh, iw = lo * g->sw - g->pl + j * g->dw;
                            run[i * g->kw + j] = (ih >= 0 && ih < g->H) ? gx.p + (ih * g->W + iw) * C : pad_row;
                        }
                    g_var[v].dwconv(hi - lo, C, ks, run, 0, g->sw * C, gw.p, gout.p + (oh * g->OW + lo) * stride,
                                    stride);
                }
            }
            for (ptrdiff_t p = 0; p < M; p++)
                for (ptrdiff_t c = 0; c < stride && p * stride + c < (ptrdiff_t)out_len; c++) {
                    float got = gout.p[p * stride + c];
                    ptrdiff_t oh = p / g->OW, ow = p % g->OW;
                    int covered = mode == 0 || (ow * g->sw - g->pl >= 0 &&
                                                ow * g->sw - g->pl + (g->kw - 1) * g->dw < g->W);
                    if (c >= C || !covered) {
                        if (got != SENTINEL) FAIL("dwconv[%s] mode %d wrote outside its pixels", g_var[v].isa, mode);
                        continue;
                    }
                    double mag, want = dwconv_ref(g, gx.p, gw.p, oh, ow, c, &mag);
                    if (!(fabs(got - want) <= 4e-7 * (double)(ks + 2) * mag + 1e-30))
                        FAIL("dwconv[%s] mode %d C=%td k=%tdx%td s=%td,%td: out[%td][%td]=%.8g want %.8g",
                             g_var[v].isa, mode, C, g->kh, g->kw, g->sh, g->sw, p, c, got, want);
                }
        }
    }
    gfree(gout), gfree(gx), gfree(gz), gfree(gw);
    free(a);
}

static void check_dwconv(void)
{
    int cases = 0;
    while (cases < 300) {
        conv g;
        if (!random_conv(&g, 1)) continue;
        dwconv_case(&g);
        cases++;
    }
    printf("dwconv-nhwc: %d shapes\n", cases);
}

/* ---- bench -------------------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* The bench's k slice: IM2ROW_IGEMM_KSLICE (0 = all of k), else the host's model. */
static ptrdiff_t kslice(ptrdiff_t mr, ptrdiff_t nr)
{
    const char *env = getenv("IM2ROW_IGEMM_KSLICE");
    return env ? (ptrdiff_t)atol(env) : im2row_igemm_nhwc_kslice(mr, nr);
}

static void bench(void)
{
    static const conv layers[] = {
        {64, 56, 56, 64, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 56, 56},     /* resnet50 3x3 */
        {256, 56, 56, 64, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 56, 56},    /* resnet50 1x1 */
        {512, 7, 7, 512, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 7, 7},       /* resnet50 3x3 on 7x7 */
        {256, 14, 14, 256, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 14, 14},   /* resnet50 3x3 on 14x14 */
        {512, 28, 28, 512, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 28, 28},   /* vgg19 3x3 on 28x28 */
        {2048, 7, 7, 512, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 7, 7},      /* resnet50 1x1 on 7x7 */
        {1024, 14, 14, 256, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 14, 14},  /* resnet50 1x1 on 14x14 */
        {144, 56, 56, 144, 144, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 56, 56}, /* mobilenet_v2 depthwise */
        {96, 112, 112, 96, 96, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 56, 56},  /* ... stride 2 */
        {32, 112, 112, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 112, 112},
        /* channel blocks of NCHW depthwise (a vector or two of channels, any ks) */
        {16, 28, 28, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 28, 28},
        {32, 14, 14, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 14, 14},
        {16, 56, 56, 16, 16, 7, 7, 1, 1, 1, 1, 3, 3, 3, 3, 56, 56},
        {32, 14, 14, 32, 32, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 14, 14},
        {48, 14, 14, 48, 48, 7, 7, 1, 1, 1, 1, 3, 3, 3, 3, 14, 14},
    };
    for (size_t li = 0; li < sizeof layers / sizeof *layers; li++) {
        const conv *g = &layers[li];
        const int dw = g->groups > 1;
        const ptrdiff_t Cg = g->C / g->groups, ks = g->kh * g->kw, K = ks * Cg, M = g->OH * g->OW;
        float *x = calloc((size_t)(g->H * g->W * g->C), sizeof(float)), *zero = calloc((size_t)g->C, sizeof(float));
        float *w = calloc((size_t)((g->OC + 64) * (K + 1)), sizeof(float)), *out = calloc((size_t)(M * g->OC), sizeof(float));
        const float **a = malloc(sizeof(*a) * (size_t)(M * ks));
        for (ptrdiff_t i = 0; i < g->H * g->W * g->C; i++) x[i] = rfloat();
        /* written, so that the weights occupy memory (untouched calloc pages all map one zero
           page, which would sit in L1 and flatter the kernel) */
        for (ptrdiff_t i = 0; i < (g->OC + 64) * (K + 1); i++) w[i] = rfloat();
        build_indirection(g, x, zero, a);
        for (int v = 0; v < g_nvar; v++) {
            if (!g_var[v].usable || strcmp(g_var[v].isa, "scalar") == 0) continue;
            double best = 1e30;
            for (int rep = 0; rep < 5; rep++) {
                double t0 = now();
                if (dw) g_var[v].dwconv(M, g->C, ks, a, ks, 0, w, out, g->C);
                else g_var[v].igemm(M, g->OC, ks, Cg, kslice(g_var[v].mr, g_var[v].nr), 0, ks, 1, ks, a, 0, w, out,
                                     g->OC);
                double t = now() - t0;
                if (t < best) best = t;
            }
            if (dw)
                printf("%-7s dwconv-nhwc C=%td %tdx%td k=%td: %.3f ms, %.1f GB/s (in + out), %.1f GF/s\n", g_var[v].isa,
                       g->C, g->H, g->W, g->kh, best * 1e3, 4.0 * (g->H * g->W * g->C + M * g->OC) / best * 1e-9,
                       2.0 * M * g->C * ks / best * 1e-9);
            else
                printf("%-7s igemm-nhwc C=%td OC=%td %tdx%td k=%td kslice=%td: %.3f ms, %.1f GF/s\n", g_var[v].isa, g->C, g->OC,
                       g->H, g->W, g->kh, kslice(g_var[v].mr, g_var[v].nr), best * 1e3, 2.0 * M * g->OC * K / best * 1e-9);
        }
        free(x), free(zero), free(w), free(out), free(a);
    }
}

int main(int argc, char **argv)
{
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    init_variants();
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        bench();
        return 0;
    }
    for (int v = 0; v < g_nvar; v++) printf("%s: %s\n", g_var[v].isa, g_var[v].usable ? "checked" : "not on this CPU");
    check_igemm();
    check_dwconv();
    if (g_fail) {
        fprintf(stderr, "%d mismatches\n", g_fail);
        return 1;
    }
    printf("all nhwc kernel checks passed\n");
    return 0;
}
