/* Standalone checker and micro-benchmark for the data-movement and depthwise kernels
 * (f32-gather, f32-scatter-bias, f32-transpose, f32-dwconv, f32-dwconv-s2).
 *
 *   data_kernels_check [check]        every compiled SIMD variant usable on this CPU against
 *                                     the scalar one, and the scalar one against a naive
 *                                     double-precision loop; exit status 1 on any mismatch.
 *   data_kernels_check bench [isa..]  GF/s of dwconv on MobileNet-style planes, ns/call of
 *                                     gather and scatter, for each variant (or those named).
 *       env ALIGN16=1: phase rows padded to a multiple of 16 floats (64-byte aligned rows);
 *       env NPLANES=k: cycle through k planes instead of ~1 MB of them (1 = L1-resident).
 *
 * Inputs sit against PROT_NONE guard pages so that reads outside the contract fault, and
 * the padding the contract says is never read is NaN, so reading it shows up in results.
 * Built by tests/c/build_data_kernels.sh; it links the kernel files directly and does not
 * use the dispatch table, so it also runs for variants the current CPU would not pick. */
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

/* SIMD variants are declared per ISA file, not in the header. */
#if defined(__x86_64__) || defined(_M_X64)
void im2row_gather__avx2(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t);
void im2row_scatter_bias__avx2(float *, ptrdiff_t, const float *, ptrdiff_t, float);
void im2row_transpose__avx2(ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t);
void im2row_dwconv__avx2(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                         ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                         ptrdiff_t, ptrdiff_t, float);
void im2row_dwconv__avx512(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                           ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                           ptrdiff_t, ptrdiff_t, float);
void im2row_dwconv_s2__avx2(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                            ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, float);
void im2row_dwconv_s2__avx512(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                              ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, float);
#ifdef IM2ROW_HAVE_GATHER_AVX512
void im2row_gather__avx512(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t);
#define GATHER_AVX512 im2row_gather__avx512
#else
#define GATHER_AVX512 im2row_gather__avx2
#endif
#ifdef IM2ROW_HAVE_SCATTER_AVX512
void im2row_scatter_bias__avx512(float *, ptrdiff_t, const float *, ptrdiff_t, float);
#define SCATTER_AVX512 im2row_scatter_bias__avx512
#else
#define SCATTER_AVX512 im2row_scatter_bias__avx2
#endif
#endif
#if defined(__aarch64__)
void im2row_gather__neon(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t);
void im2row_scatter_bias__neon(float *, ptrdiff_t, const float *, ptrdiff_t, float);
void im2row_transpose__neon(ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t);
void im2row_dwconv__neon(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                         ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                         ptrdiff_t, ptrdiff_t, float);
void im2row_dwconv_s2__neon(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                            ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, float);
#endif

typedef struct {
    const char *isa;
    int usable;
    im2row_gather_fn gather;
    im2row_scatter_fn scatter;
    im2row_dwconv_fn dwconv;
    im2row_transpose_fn transpose;
    im2row_dwconv_s2_fn dwconv_s2;
} variant;

static variant g_var[4];
static int g_nvar;

static void init_variants(void)
{
    g_var[g_nvar++] = (variant){"scalar", 1, im2row_gather__scalar, im2row_scatter_bias__scalar,
                                im2row_dwconv__scalar, im2row_transpose__scalar, im2row_dwconv_s2__scalar};
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    g_var[g_nvar++] = (variant){"avx2", avx2, im2row_gather__avx2, im2row_scatter_bias__avx2,
                                im2row_dwconv__avx2, im2row_transpose__avx2, im2row_dwconv_s2__avx2};
    g_var[g_nvar++] = (variant){"avx512", avx512, GATHER_AVX512, SCATTER_AVX512,
                                im2row_dwconv__avx512, im2row_transpose__avx2, im2row_dwconv_s2__avx512};
#endif
#if defined(__aarch64__)
    g_var[g_nvar++] = (variant){"neon", 1, im2row_gather__neon, im2row_scatter_bias__neon,
                                im2row_dwconv__neon, im2row_transpose__neon, im2row_dwconv_s2__neon};
#endif
}

/* ---- helpers ------------------------------------------------------------------------ */

#include "check-util.h"

static int g_fail;
#define FAIL(...) do { if (g_fail++ < 20) { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); } } while (0)

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* ---- gather -------------------------------------------------------------------------- */

static void gather_naive(float *dst, const float *src, ptrdiff_t len, ptrdiff_t start,
                         ptrdiff_t stride, ptrdiff_t n)
{
    for (ptrdiff_t k = 0; k < n; k++) {
        ptrdiff_t idx = start + k * stride;
        dst[k] = (idx >= 0 && idx < len) ? src[idx] : 0.0f;
    }
}

static long gather_case(ptrdiff_t src_len, ptrdiff_t start, ptrdiff_t stride, ptrdiff_t n,
                        int src_at_end, ptrdiff_t dst_off)
{
    int any_in = 0;
    for (ptrdiff_t k = 0; k < n; k++) {
        ptrdiff_t idx = start + k * stride;
        if (idx >= 0 && idx < src_len) { any_in = 1; break; }
    }
    guarded gs = galloc((size_t)(src_len > 0 ? src_len : 1), src_at_end);
    float *src = gs.p + (src_at_end && src_len == 0 ? 1 : 0);
    for (ptrdiff_t i = 0; i < src_len; i++)
        src[i] = rfloat() + 2.0f;   /* never 0, so a missed copy is visible */
    const float *src_arg = (!any_in && (rnd() & 1)) ? NULL : src;

    const ptrdiff_t guard = 24;
    float *ref = malloc(sizeof(float) * (size_t)(n + 1));
    float *buf = malloc(sizeof(float) * (size_t)(n + 2 * guard + dst_off));
    float *dst = buf + guard + dst_off;
    gather_naive(ref, src, src_len, start, stride, n);

    long calls = 0;
    for (int v = 0; v < g_nvar; v++) {
        if (!g_var[v].usable) continue;
        for (ptrdiff_t i = 0; i < n + 2 * guard + dst_off; i++) buf[i] = -777.0f;
        g_var[v].gather(dst, src_arg, src_len, start, stride, n);
        calls++;
        for (ptrdiff_t k = 0; k < n; k++)
            if (!same_bits(dst[k], ref[k])) {
                FAIL("gather[%s] len=%td start=%td stride=%td n=%td src=%s: dst[%td]=%g want %g",
                     g_var[v].isa, src_len, start, stride, n, src_arg ? "ptr" : "NULL", k, dst[k], ref[k]);
                break;
            }
        for (ptrdiff_t i = -guard - dst_off; i < 0; i++)
            if (dst[i] != -777.0f) { FAIL("gather[%s] wrote before dst (n=%td)", g_var[v].isa, n); break; }
        for (ptrdiff_t i = n; i < n + guard; i++)
            if (dst[i] != -777.0f) {
                FAIL("gather[%s] len=%td start=%td stride=%td n=%td wrote past dst[n] at %td",
                     g_var[v].isa, src_len, start, stride, n, i);
                break;
            }
    }
    free(ref);
    free(buf);
    gfree(gs);
    return calls;
}

static void check_gather(void)
{
    static const ptrdiff_t strides[] = {1, 2, 3, 4, 5, 7, 8, 9, 16};
    long calls = 0;
    /* Sweep: every n to 100, edges on both sides, strides 1,2,3,7. */
    static const ptrdiff_t sweep_strides[] = {1, 2, 3, 7};
    for (int si = 0; si < 4; si++)
        for (ptrdiff_t n = 0; n <= 100; n++) {
            ptrdiff_t s = sweep_strides[si];
            ptrdiff_t len = rint_in(0, 150);
            ptrdiff_t starts[] = {0, -1, -3, -(s * n) / 2, -s * n - 5, len - 1, len, len + 4,
                                  len - (s * n) / 2, rint_in(-40, len + 10)};
            for (size_t t = 0; t < sizeof starts / sizeof *starts; t++)
                calls += gather_case(len, starts[t], s, n, (int)(rnd() & 1), rint_in(0, 7));
        }
    /* Random cases, wider stride set. */
    for (int c = 0; c < 20000; c++) {
        ptrdiff_t s = strides[rnd() % (sizeof strides / sizeof *strides)];
        ptrdiff_t n = rint_in(0, 300);
        ptrdiff_t len = rint_in(0, 400);
        ptrdiff_t start = rint_in(-(s * n) - 10, len + 10);
        calls += gather_case(len, start, s, n, (int)(rnd() & 1), rint_in(0, 7));
    }
    printf("gather: %ld variant calls checked\n", calls);
}

/* ---- scatter-bias --------------------------------------------------------------------- */

static void check_scatter(void)
{
    long calls = 0;
    for (int c = 0; c < 6000; c++) {
        ptrdiff_t n = c < 400 ? c % 200 : rint_in(0, 700);
        ptrdiff_t ds = c % 3 == 0 ? 1 : rint_in(1, 12);
        float bias = rfloat() * 3.0f;
        guarded gs = galloc((size_t)(n > 0 ? n : 1), (int)(rnd() & 1));
        for (ptrdiff_t k = 0; k < n; k++) gs.p[k] = rfloat();
        size_t span = (size_t)(n > 0 ? (n - 1) * ds + 1 : 0);
        guarded gd = galloc(span + 3 > 0 ? span + 3 : 1, 0);
        ptrdiff_t off = rint_in(0, 2);
        float *dst = gd.p + off;
        for (int v = 0; v < g_nvar; v++) {
            if (!g_var[v].usable) continue;
            for (size_t i = 0; i < span + 3; i++) gd.p[i] = -777.0f;
            g_var[v].scatter(dst, ds, gs.p, n, bias);
            calls++;
            for (ptrdiff_t i = -off; i < (ptrdiff_t)span + 3 - off; i++) {
                int hit = i >= 0 && i < (ptrdiff_t)span && i % ds == 0;
                float want = hit ? gs.p[i / ds] + bias : -777.0f;
                if (!same_bits(dst[i], want)) {
                    FAIL("scatter[%s] n=%td stride=%td: dst[%td]=%g want %g", g_var[v].isa, n, ds, i,
                         dst[i], want);
                    break;
                }
            }
        }
        gfree(gs);
        gfree(gd);
    }
    printf("scatter_bias: %ld variant calls checked\n", calls);
}

/* ---- transpose ------------------------------------------------------------------------ */

/* rows x cols from a source of row stride lds (against a guard page) into a destination of
 * row stride ldd whose gaps are sentinels: every element moved, nothing else written. */
static void check_transpose(void)
{
    long calls = 0;
    for (int c = 0; c < 3000; c++) {
        ptrdiff_t rows = c < 400 ? c % 20 : rint_in(0, 70);
        ptrdiff_t cols = c < 400 ? c / 20 : rint_in(0, 70);
        ptrdiff_t lds = cols + (c % 3 ? rint_in(0, 9) : 0), ldd = rows + (c % 2 ? rint_in(0, 9) : 0);
        size_t src_n = (size_t)(rows > 0 ? (rows - 1) * lds + cols : 0);
        size_t dst_n = (size_t)(cols > 0 ? (cols - 1) * ldd + rows : 0);
        guarded gs = galloc(src_n ? src_n : 1, (int)(rnd() & 1));
        guarded gd = galloc(dst_n ? dst_n : 1, (int)(rnd() & 1));
        for (size_t i = 0; i < src_n; i++) gs.p[i] = rfloat();
        for (int v = 0; v < g_nvar; v++) {
            if (!g_var[v].usable) continue;
            for (size_t i = 0; i < dst_n; i++) gd.p[i] = -777.0f;
            g_var[v].transpose(rows, cols, gs.p, lds, gd.p, ldd);
            calls++;
            for (ptrdiff_t j = 0; j < cols; j++)
                for (ptrdiff_t i = 0; i < ldd && j * ldd + i < (ptrdiff_t)dst_n; i++) {
                    float want = i < rows ? gs.p[i * lds + j] : -777.0f;
                    if (!same_bits(gd.p[j * ldd + i], want)) {
                        FAIL("transpose[%s] %tdx%td lds=%td ldd=%td: dst[%td][%td]=%g want %g",
                             g_var[v].isa, rows, cols, lds, ldd, j, i, gd.p[j * ldd + i], want);
                        j = cols;
                        break;
                    }
                }
        }
        gfree(gs);
        gfree(gd);
    }
    /* A negative extent (a band that reads only padding) is empty: nothing read or written
     * (the guard pages on either side of one-float views catch a stray access). */
    static const ptrdiff_t empty[][2] = {{-3, 5}, {5, -2}, {-1, -1}, {-9, 17}, {17, -9}};
    for (int side = 0; side < 2; side++)
        for (size_t e = 0; e < sizeof empty / sizeof empty[0]; e++) {
            guarded gs = galloc(1, side), gd = galloc(1, side);
            gs.p[0] = 1.0f, gd.p[0] = -777.0f;
            for (int v = 0; v < g_nvar; v++) {
                if (!g_var[v].usable) continue;
                g_var[v].transpose(empty[e][0], empty[e][1], gs.p, 1, gd.p, 1);
                calls++;
                if (!same_bits(gd.p[0], -777.0f))
                    FAIL("transpose[%s] %tdx%td wrote its destination", g_var[v].isa,
                         empty[e][0], empty[e][1]);
            }
            gfree(gs);
            gfree(gd);
        }
    printf("transpose: %ld variant calls checked\n", calls);
}

/* ---- dwconv ---------------------------------------------------------------------------- */

typedef struct {
    ptrdiff_t oh, ow, kh, kw, sh, sw, dh, dw, out_stride, hp, wp, phase_w;
} dwshape;

/* Fill phases from xpad (hp x wp); entries past wp are NaN (never read by contract). */
static void make_phases(float *ph, const float *xpad, const dwshape *s)
{
    for (ptrdiff_t p = 0; p < s->sw; p++)
        for (ptrdiff_t r = 0; r < s->hp; r++)
            for (ptrdiff_t u = 0; u < s->phase_w; u++) {
                ptrdiff_t c = u * s->sw + p;
                ph[(p * s->hp + r) * s->phase_w + u] = c < s->wp ? xpad[r * s->wp + c] : NAN;
            }
}

static int dw_case(const dwshape *s, int verbose_fail)
{
    int bad = 0;
    size_t nph = (size_t)(s->sw * s->hp * s->phase_w);
    float *xpad = malloc(sizeof(float) * (size_t)(s->hp * s->wp));
    for (ptrdiff_t i = 0; i < s->hp * s->wp; i++) xpad[i] = rfloat();
    guarded gp = galloc(nph, (int)(rnd() & 1));
    make_phases(gp.p, xpad, s);
    float w[49];
    for (int k = 0; k < 49; k++) w[k] = rfloat();
    float bias = rfloat();

    /* naive double reference and the per-output magnitude bound for the tolerance */
    size_t nout = (size_t)(s->oh * s->ow);
    double *ref = malloc(sizeof(double) * nout), *mag = malloc(sizeof(double) * nout);
    for (ptrdiff_t y = 0; y < s->oh; y++)
        for (ptrdiff_t x = 0; x < s->ow; x++) {
            double acc = bias, m = fabs(bias);
            for (ptrdiff_t i = 0; i < s->kh; i++)
                for (ptrdiff_t j = 0; j < s->kw; j++) {
                    double t = (double)w[i * s->kw + j] *
                               xpad[(y * s->sh + i * s->dh) * s->wp + x * s->sw + j * s->dw];
                    acc += t;
                    m += fabs(t);
                }
            ref[y * s->ow + x] = acc;
            mag[y * s->ow + x] = m;
        }

    size_t outn = (size_t)((s->oh - 1) * s->out_stride + s->ow);
    guarded go = galloc(outn + (size_t)(s->out_stride - s->ow), (int)(rnd() & 1));
    float *scal = malloc(sizeof(float) * nout);
    for (int v = 0; v < g_nvar; v++) {
        if (!g_var[v].usable) continue;
        for (size_t i = 0; i < outn + (size_t)(s->out_stride - s->ow); i++) go.p[i] = -777.0f;
        g_var[v].dwconv(go.p, s->out_stride, s->oh, s->ow, gp.p, s->hp, s->phase_w, w, s->kh, s->kw,
                        s->sh, s->sw, s->dh, s->dw, bias);
        for (ptrdiff_t y = 0; y < s->oh; y++) {
            for (ptrdiff_t x = 0; x < s->out_stride; x++) {
                float got = go.p[y * s->out_stride + x];
                if (x >= s->ow) {
                    if (got != -777.0f) {
                        if (!bad++) FAIL("dwconv[%s] wrote out[%td][%td] past ow", g_var[v].isa, y, x);
                    }
                    continue;
                }
                size_t o = (size_t)(y * s->ow + x);
                double tol = 1e-5 * mag[o] + 1e-30;
                /* scalar vs naive, every SIMD variant vs scalar */
                double want = v == 0 ? ref[o] : (double)scal[o];
                if (!(fabs((double)got - want) <= tol)) {
                    if (!bad++ && verbose_fail)
                        FAIL("dwconv[%s] oh=%td ow=%td k=%tdx%td s=%td,%td d=%td,%td os=%td pw=%td: "
                             "out[%td][%td]=%.9g want %.9g",
                             g_var[v].isa, s->oh, s->ow, s->kh, s->kw, s->sh, s->sw, s->dh, s->dw,
                             s->out_stride, s->phase_w, y, x, got, want);
                }
                if (v == 0) scal[o] = got;
            }
        }
    }
    if (bad && !verbose_fail) g_fail++;
    free(xpad); free(ref); free(mag); free(scal);
    gfree(gp); gfree(go);
    return bad;
}

static void dw_make(dwshape *s, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh,
                    ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw, int extra)
{
    s->oh = oh; s->ow = ow; s->kh = kh; s->kw = kw; s->sh = sh; s->sw = sw; s->dh = dh; s->dw = dw;
    s->out_stride = ow + (extra ? rint_in(1, 9) : 0);
    s->hp = (oh - 1) * sh + (kh - 1) * dh + 1 + (extra ? rint_in(0, 2) : 0);
    s->wp = (ow - 1) * sw + (kw - 1) * dw + 1 + (extra ? rint_in(0, 2) : 0);
    ptrdiff_t need = ow + ((kw - 1) * dw) / sw;
    ptrdiff_t pw = (s->wp + sw - 1) / sw;
    s->phase_w = (pw > need ? pw : need) + (extra ? rint_in(0, 3) : 0);
}

static void check_dwconv(void)
{
    static const ptrdiff_t ks[] = {1, 2, 3, 5, 7};
    long cases = 0;
    dwshape s;
    /* The specialised shapes over every width 1..70 and short/odd heights. */
    static const ptrdiff_t hot[][3] = {{3, 1, 1}, {3, 2, 1}, {5, 1, 1}, {5, 2, 1}, {3, 1, 2}, {7, 1, 1}, {7, 2, 1}};
    for (size_t h = 0; h < sizeof hot / sizeof *hot; h++)
        for (ptrdiff_t sw = 1; sw <= 3; sw++)
            for (ptrdiff_t ow = 1; ow <= 70; ow++) {
                ptrdiff_t oh = 1 + (ow * 7 + (ptrdiff_t)h) % 13;
                dw_make(&s, oh, ow, hot[h][0], hot[h][0], hot[h][1], sw, hot[h][2], rint_in(1, 3), (int)(ow & 1));
                dw_case(&s, 1);
                cases++;
            }
    /* Every kernel/stride/dilation combination once, with random odd sizes. */
    for (int a = 0; a < 5; a++) for (int b = 0; b < 5; b++)
        for (ptrdiff_t sh = 1; sh <= 3; sh++) for (ptrdiff_t sw = 1; sw <= 3; sw++)
            for (ptrdiff_t dh = 1; dh <= 3; dh++) for (ptrdiff_t dw = 1; dw <= 3; dw++) {
                dw_make(&s, rint_in(1, 70), rint_in(1, 70), ks[a], ks[b], sh, sw, dh, dw, 1);
                dw_case(&s, 1);
                cases++;
            }
    /* Random extra cases, including tall-and-narrow and short-and-wide planes. */
    for (int c = 0; c < 1500; c++) {
        ptrdiff_t oh = rint_in(1, 70), ow = rint_in(1, 70);
        if (c % 5 == 0) ow = rint_in(1, 9);
        if (c % 5 == 1) oh = rint_in(1, 5);
        dw_make(&s, oh, ow, ks[rnd() % 5], ks[rnd() % 5], rint_in(1, 3), rint_in(1, 3), rint_in(1, 3),
                rint_in(1, 3), (int)(rnd() & 1));
        dw_case(&s, 1);
        cases++;
    }
    /* MobileNetV2 planes at their real sizes. */
    static const ptrdiff_t mb[][2] = {{112, 1}, {112, 2}, {56, 1}, {56, 2}, {28, 1}, {28, 2},
                                      {14, 1}, {14, 2}, {7, 1}};
    for (size_t m = 0; m < sizeof mb / sizeof *mb; m++) {
        ptrdiff_t H = mb[m][0], st = mb[m][1], o = (H + 2 - 3) / st + 1;
        dw_make(&s, o, o, 3, 3, st, st, 1, 1, 0);
        dw_case(&s, 1);
        cases++;
    }
    printf("dwconv: %ld shapes checked on %d variant(s)\n", cases, g_nvar);
}

/* ---- dwconv-s2 ------------------------------------------------------------------------- */

/* One stride-2 plane: a float64 reference, the scalar oracle against it and every SIMD
 * variant against the scalar; the plane flush against a guard page at either end (a load
 * outside it faults), output columns past ow holding a sentinel. */
static void dw_s2_case(ptrdiff_t height, ptrdiff_t width, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t pt,
                       ptrdiff_t pl, ptrdiff_t pb, ptrdiff_t pr, ptrdiff_t extra)
{
    const ptrdiff_t oh = (height + pt + pb - kh) / 2 + 1, ow = (width + pl + pr - kw) / 2 + 1;
    if (height + pt + pb < kh || width + pl + pr < kw || oh < 1 || ow < 1) return;
    const ptrdiff_t os = ow + extra;
    guarded gx = galloc((size_t)(height * width), (int)(rnd() & 1));
    for (ptrdiff_t i = 0; i < height * width; i++) gx.p[i] = rfloat();
    float w[64];
    for (int k = 0; k < 64; k++) w[k] = rfloat();
    const float bias = rfloat();
    const size_t nout = (size_t)((oh - 1) * os + ow + extra);
    guarded go = galloc(nout, (int)(rnd() & 1));
    float *scal = malloc(sizeof(float) * (size_t)(oh * ow));
    for (int v = 0; v < g_nvar; v++) {
        if (!g_var[v].usable) continue;
        for (size_t i = 0; i < nout; i++) go.p[i] = -777.0f;
        g_var[v].dwconv_s2(go.p, os, oh, ow, gx.p, height, width, pt, pl, w, kh, kw, bias);
        for (ptrdiff_t y = 0; y < oh; y++)
            for (ptrdiff_t x = 0; x < os && y * os + x < (ptrdiff_t)nout; x++) {
                float got = go.p[y * os + x];
                if (x >= ow) {
                    if (got != -777.0f) FAIL("dwconv_s2[%s] wrote out[%td][%td] past ow", g_var[v].isa, y, x);
                    continue;
                }
                double acc = bias, mag = fabs(bias);
                for (ptrdiff_t i = 0; i < kh; i++)
                    for (ptrdiff_t j = 0; j < kw; j++) {
                        ptrdiff_t r = 2 * y - pt + i, c = 2 * x - pl + j;
                        if (r < 0 || r >= height || c < 0 || c >= width) continue;
                        double t = (double)w[i * kw + j] * gx.p[r * width + c];
                        acc += t, mag += fabs(t);
                    }
                double want = v == 0 ? acc : (double)scal[y * ow + x];
                if (!(fabs((double)got - want) <= 1e-5 * mag + 1e-30))
                    FAIL("dwconv_s2[%s] %tdx%td k=%tdx%td pads %td,%td,%td,%td: out[%td][%td]=%.9g want %.9g",
                         g_var[v].isa, height, width, kh, kw, pt, pl, pb, pr, y, x, got, want);
                if (v == 0) scal[y * ow + x] = got;
            }
    }
    free(scal);
    gfree(gx), gfree(go);
}

static void check_dwconv_s2(void)
{
    long cases = 0;
    /* every kernel width, odd heights and widths 1..70 (every tail of 4, 8 and 16 columns) */
    for (ptrdiff_t kw = 1; kw <= IM2ROW_DWCONV_S2_MAX_KW; kw++)
        for (ptrdiff_t width = 1; width <= 70; width++, cases++)
            dw_s2_case(rint_in(1, 20), width, rint_in(1, 8), kw, rint_in(0, 4), rint_in(0, 4), rint_in(0, 4),
                       rint_in(0, 4), rint_in(0, 3));
    /* the square kernels of MobileNet and EfficientNet, padding k/2, planes up to 150 */
    for (int c = 0; c < 300; c++, cases++) {
        ptrdiff_t k = 3 + 2 * (ptrdiff_t)(rnd() % 3), side = rint_in(1, 150);
        dw_s2_case(side, c % 3 ? side : rint_in(1, 150), k, k, k / 2, k / 2, k / 2, k / 2, rint_in(0, 2));
    }
    printf("dwconv-s2: %ld shapes checked on %d variant(s)\n", cases, g_nvar);
}

/* ---- bench ----------------------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int want_isa(const char *isa, int argc, char **argv)
{
    if (argc <= 2) return 1;
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], isa)) return 1;
    return 0;
}

/* Seconds per call of fn(arg), best of `reps` timings of batches of >= ~2 ms. */
typedef void (*bench_fn)(void *);
static double time_call(bench_fn fn, void *arg, int reps)
{
    long iters = 1;
    for (;;) {
        double t0 = now();
        for (long i = 0; i < iters; i++) fn(arg);
        double dt = now() - t0;
        if (dt > 2e-3) break;
        iters *= 2;
    }
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        for (long i = 0; i < iters; i++) fn(arg);
        double dt = (now() - t0) / iters;
        if (dt < best) best = dt;
    }
    return best;
}

typedef struct {
    im2row_dwconv_fn fn;
    dwshape s;
    float *out, *ph, *w;
    int nplanes;   /* cycle through several planes, as a layer does per channel */
    size_t ph_sz, out_sz;
} dw_bench_arg;

static void dw_bench_run(void *p)
{
    dw_bench_arg *a = p;
    for (int c = 0; c < a->nplanes; c++)
        a->fn(a->out + c * a->out_sz, a->s.out_stride, a->s.oh, a->s.ow, a->ph + c * a->ph_sz, a->s.hp,
              a->s.phase_w, a->w + 9 * c, a->s.kh, a->s.kw, a->s.sh, a->s.sw, a->s.dh, a->s.dw, 0.5f);
}

typedef struct {
    im2row_gather_fn fn;
    float *dst;
    const float *src;
    ptrdiff_t len, start, stride, n, rows;
} gather_bench_arg;

static void gather_bench_run(void *p)
{
    gather_bench_arg *a = p;
    /* rows of one im2row fill: the same source row, each tap shifting the start by 1 */
    for (ptrdiff_t r = 0; r < a->rows; r++)
        a->fn(a->dst + r * a->n, a->src, a->len, a->start + (r % 3), a->stride, a->n);
}

typedef struct {
    im2row_scatter_fn fn;
    float *dst;
    const float *src;
    ptrdiff_t n, ds;
} scatter_bench_arg;

static void scatter_bench_run(void *p)
{
    scatter_bench_arg *a = p;
    a->fn(a->dst, a->ds, a->src, a->n, 0.25f);
}

static int g_align16;

static void bench(int argc, char **argv)
{
    g_align16 = getenv("ALIGN16") != NULL;
    /* dwconv: 3x3 pad 1 on an HxH input, stride 1 and 2 (MobileNetV2's depthwise shapes). */
    printf("dwconv 3x3 pad 1, GF/s (2*9*OH*OW flops per plane), %s\n",
           "planes cycled through a layer-like working set");
    printf("%-22s", "input -> output");
    for (int v = 0; v < g_nvar; v++)
        if (g_var[v].usable && want_isa(g_var[v].isa, argc, argv)) printf("%10s", g_var[v].isa);
    printf("\n");
    static const ptrdiff_t hs[] = {112, 56, 28, 14, 7};
    for (int st = 1; st <= 2; st++)
        for (int h = 0; h < 5; h++) {
            ptrdiff_t H = hs[h], o = (H + 2 - 3) / st + 1;
            dw_bench_arg a;
            dw_make(&a.s, o, o, 3, 3, st, st, 1, 1, 0);
            if (g_align16) /* the layout a caller can choose: rows of 16-float multiples */
                a.s.phase_w = (a.s.phase_w + 15) / 16 * 16;
            a.ph_sz = (size_t)(a.s.sw * a.s.hp * a.s.phase_w);
            a.out_sz = (size_t)(a.s.oh * a.s.out_stride);
            /* ~16 planes or ~1 MB of input, whichever is less: stays in L2, as when the
             * caller pads/splits one channel at a time right before the call */
            a.nplanes = (int)(262144 / a.ph_sz);
            if (a.nplanes > 16) a.nplanes = 16;
            if (a.nplanes < 1) a.nplanes = 1;
            if (getenv("NPLANES")) a.nplanes = atoi(getenv("NPLANES"));
            a.ph = aligned_alloc(64, ((a.ph_sz * a.nplanes * 4 + 63) / 64) * 64);
            a.out = aligned_alloc(64, ((a.out_sz * a.nplanes * 4 + 63) / 64) * 64);
            a.w = malloc(sizeof(float) * 9 * a.nplanes);
            for (size_t i = 0; i < a.ph_sz * a.nplanes; i++) a.ph[i] = rfloat();
            for (int i = 0; i < 9 * a.nplanes; i++) a.w[i] = rfloat();
            char label[64];
            snprintf(label, sizeof label, "%tdx%td s%d -> %tdx%td", H, H, st, o, o);
            printf("%-22s", label);
            for (int v = 0; v < g_nvar; v++) {
                if (!g_var[v].usable || !want_isa(g_var[v].isa, argc, argv)) continue;
                a.fn = g_var[v].dwconv;
                double t = time_call(dw_bench_run, &a, 7) / a.nplanes;
                printf("%10.1f", 2.0 * 9 * o * o / t * 1e-9);
            }
            printf("\n");
            free(a.ph); free(a.out); free(a.w);
        }

    /* dwconv, other shapes: GF/s on a 56x56 output. */
    printf("\ndwconv other shapes, 56x56 output, GF/s\n");
    static const int oth[][4] = {{5, 1, 1, 0}, {5, 2, 1, 0}, {7, 1, 1, 0}, {3, 1, 2, 0}, {1, 1, 1, 0}, {3, 3, 1, 0}};
    for (size_t k = 0; k < sizeof oth / sizeof *oth; k++) {
        dw_bench_arg a;
        dw_make(&a.s, 56, 56, oth[k][0], oth[k][0], oth[k][1], oth[k][1], oth[k][2], oth[k][2], 0);
        a.ph_sz = (size_t)(a.s.sw * a.s.hp * a.s.phase_w);
        a.out_sz = (size_t)(a.s.oh * a.s.out_stride);
        a.nplanes = 4;
        a.ph = malloc(sizeof(float) * a.ph_sz * 4);
        a.out = malloc(sizeof(float) * a.out_sz * 4);
        a.w = malloc(sizeof(float) * 49 * 4 + 64);
        for (size_t i = 0; i < a.ph_sz * 4; i++) a.ph[i] = rfloat();
        for (int i = 0; i < 49 * 4; i++) a.w[i] = rfloat();
        printf("%dx%d s%d d%d%8s", oth[k][0], oth[k][0], oth[k][1], oth[k][2], "");
        for (int v = 0; v < g_nvar; v++) {
            if (!g_var[v].usable || !want_isa(g_var[v].isa, argc, argv)) continue;
            a.fn = g_var[v].dwconv;
            double t = time_call(dw_bench_run, &a, 5) / 4;
            printf("%10.1f", 2.0 * oth[k][0] * oth[k][0] * 56 * 56 / t * 1e-9);
        }
        printf("\n");
        free(a.ph); free(a.out); free(a.w);
    }

    /* gather: ns per row (and per element) for typical row lengths. */
    printf("\ngather, ns per call (rows of n floats, start -1 .. +1, src_len ~ n*stride)\n");
    static const ptrdiff_t gn[] = {7, 14, 28, 56, 112, 224};
    for (ptrdiff_t stride = 1; stride <= 3; stride++)
        for (int g = 0; g < 6; g++) {
            gather_bench_arg a;
            a.n = gn[g];
            a.stride = stride;
            a.len = a.n * stride;
            a.start = -1;
            a.rows = 64;
            float *src = malloc(sizeof(float) * (size_t)(a.len + 16));
            for (ptrdiff_t i = 0; i < a.len; i++) src[i] = rfloat();
            a.src = src;
            a.dst = malloc(sizeof(float) * (size_t)(a.n * a.rows));
            printf("stride %td n %4td       ", stride, a.n);
            for (int v = 0; v < g_nvar; v++) {
                if (!g_var[v].usable || !want_isa(g_var[v].isa, argc, argv)) continue;
                a.fn = g_var[v].gather;
                double t = time_call(gather_bench_run, &a, 7) / a.rows;
                printf("%10.1f", t * 1e9);
            }
            printf("\n");
            free(src); free(a.dst);
        }

    printf("\nscatter_bias, ns per call\n");
    static const ptrdiff_t sn[] = {16, 64, 256, 1024};
    for (ptrdiff_t ds = 1; ds <= 64; ds = ds == 1 ? 4 : ds * 16)
        for (int g = 0; g < 4; g++) {
            scatter_bench_arg a;
            a.n = sn[g];
            a.ds = ds;
            float *src = malloc(sizeof(float) * (size_t)a.n);
            for (ptrdiff_t i = 0; i < a.n; i++) src[i] = rfloat();
            a.src = src;
            a.dst = malloc(sizeof(float) * (size_t)(a.n * ds));
            printf("stride %3td n %4td     ", ds, a.n);
            for (int v = 0; v < g_nvar; v++) {
                if (!g_var[v].usable || !want_isa(g_var[v].isa, argc, argv)) continue;
                a.fn = g_var[v].scatter;
                printf("%10.1f", time_call(scatter_bench_run, &a, 7) * 1e9);
            }
            printf("\n");
            free(src); free(a.dst);
        }
}

int main(int argc, char **argv)
{
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    init_variants();
    printf("variants:");
    for (int v = 0; v < g_nvar; v++) printf(" %s%s", g_var[v].isa, g_var[v].usable ? "" : "(unsupported here)");
    printf("\n");
    if (argc > 1 && !strcmp(argv[1], "bench")) {
        bench(argc, argv);
        return 0;
    }
    check_gather();
    check_scatter();
    check_transpose();
    check_dwconv();
    check_dwconv_s2();
    if (g_fail) {
        printf("FAILED: %d mismatches\n", g_fail);
        return 1;
    }
    printf("all kernel variants match\n");
    return 0;
}
