/* Standalone runner for the f32-gemm-packed kernel family.
 *
 *   gemm_packed check   every compiled variant usable on this CPU against a double-precision
 *                       naive GEMM over many odd shapes; exit status 1 on any mismatch.
 *   gemm_packed bench [reps [variant...]]
 *                       GF/s of the variants (all by default) and of OpenBLAS sgemm at
 *                       convolution shapes, side by side: min over reps after warm-up, 1 thread.
 *
 * sgemm is loaded with dlopen from $IM2ROW_SGEMM_LIB (e.g. scipy's libscipy_openblas*.so), so
 * the check needs no BLAS at all (define GEMM_PACKED_NO_DLOPEN for static builds).  The runner
 * calls the variants directly, not through dispatch.c, so that every variant the CPU supports
 * is exercised, not only the best one.
 */
#define _GNU_SOURCE
#ifndef GEMM_PACKED_NO_DLOPEN
#include <dlfcn.h>
#endif
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "im2row_kernels.h"

extern const ptrdiff_t im2row_gemm_mr__scalar;
#if defined(__x86_64__) || defined(_M_X64)
void im2row_gemm__avx2(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, const float *const *,
                       float *, ptrdiff_t, ptrdiff_t, int);
void im2row_gemm__avx512(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, const float *const *,
                         float *, ptrdiff_t, ptrdiff_t, int);
extern const ptrdiff_t im2row_gemm_mr__avx2;
extern const ptrdiff_t im2row_gemm_mr__avx512;
static int has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
static int has_avx512(void)
{
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
#endif
#if defined(__aarch64__)
void im2row_gemm__neon(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, const float *const *,
                       float *, ptrdiff_t, ptrdiff_t, int);
extern const ptrdiff_t im2row_gemm_mr__neon;
static int has_neon(void) { return 1; }
#endif
static int always(void) { return 1; }

typedef struct {
    const char *name;
    im2row_gemm_fn fn;
    const ptrdiff_t *mr;
    int (*supported)(void);
} variant;

static const variant variants[] = {
#if defined(__x86_64__) || defined(_M_X64)
    {"avx512", im2row_gemm__avx512, &im2row_gemm_mr__avx512, has_avx512},
    {"avx2", im2row_gemm__avx2, &im2row_gemm_mr__avx2, has_avx2},
#endif
#if defined(__aarch64__)
    {"neon", im2row_gemm__neon, &im2row_gemm_mr__neon, has_neon},
#endif
    {"scalar", im2row_gemm__scalar, &im2row_gemm_mr__scalar, always},
};
enum { NVARIANTS = sizeof(variants) / sizeof(variants[0]) };

/* ---- guarded buffers: the last byte of the payload sits right before a PROT_NONE page, so any
 * read past the end of A (packed) or B faults instead of passing silently. ---- */
typedef struct {
    void *base;
    size_t len;
    float *p;
} guarded;

static guarded guarded_alloc(size_t nfloats)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t bytes = nfloats * sizeof(float);
    const size_t body = (bytes + page - 1) / page * page;
    guarded g;
    g.len = body + page;
    g.base = mmap(NULL, g.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g.base == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    mprotect((char *)g.base + body, page, PROT_NONE);
    g.p = (float *)((char *)g.base + body - bytes);
    return g;
}

static void guarded_free(guarded g) { munmap(g.base, g.len); }

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* ---- check ---- */
static long check_one(const variant *v, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, ptrdiff_t ldb,
                      ptrdiff_t ldc, ptrdiff_t cs, int accumulate)
{
    const ptrdiff_t mr = *v->mr;
    const ptrdiff_t mp = (m + mr - 1) / mr * mr;
    const float sentinel = -12345.0f;
    float *a = malloc(sizeof(float) * (size_t)(m * k));
    guarded ap = guarded_alloc((size_t)(mp * k));
    guarded b = guarded_alloc((size_t)((k - 1) * ldb + n));
    const ptrdiff_t crows = m + 1; /* one extra row must stay untouched */
    float *c = malloc(sizeof(float) * (size_t)(crows * ldc));
    float *c0 = malloc(sizeof(float) * (size_t)(crows * ldc));
    long bad = 0;

    for (ptrdiff_t i = 0; i < m * k; i++) a[i] = frand();
    for (ptrdiff_t i = 0; i < (k - 1) * ldb + n; i++) b.p[i] = frand();
    for (ptrdiff_t i = 0; i < crows * ldc; i++) {
        const int inside = (i / ldc) < m && (i % ldc) % cs == 0 && (i % ldc) / cs < n;
        c0[i] = !inside ? sentinel : accumulate ? frand() : NAN;
    }
    memcpy(c, c0, sizeof(float) * (size_t)(crows * ldc));
    im2row_pack_a(ap.p, a, k, m, k, mr);
    /* B rows are reached through pointers, in reverse memory order, so a kernel that assumed
     * a constant row stride would fail. */
    const float **brows = malloc(sizeof(*brows) * (size_t)k);
    for (ptrdiff_t kk = 0; kk < k; kk++) brows[kk] = b.p + (k - 1 - kk) * ldb;
    v->fn(m, n, k, ap.p, brows, c, ldc, cs, accumulate);
    free(brows);

    const double tol = 1e-5 * sqrt((double)k) + 1e-6;
    for (ptrdiff_t i = 0; i < crows; i++) {
        for (ptrdiff_t j = 0; j < ldc; j++) {
            const float got = c[i * ldc + j];
            if (i >= m || j % cs != 0 || j / cs >= n) {
                if (memcmp(&got, &c0[i * ldc + j], sizeof got) != 0) {
                    if (bad++ < 3)
                        fprintf(stderr, "  %s m=%td n=%td k=%td ldb=%td ldc=%td acc=%d: wrote outside C at (%td,%td)\n",
                                v->name, m, n, k, ldb, ldc, accumulate, i, j);
                }
                continue;
            }
            const ptrdiff_t col = j / cs;
            double ref = accumulate ? (double)c0[i * ldc + j] : 0.0;
            double scale = fabs(ref);
            for (ptrdiff_t kk = 0; kk < k; kk++) {
                const double t = (double)a[i * k + kk] * (double)b.p[(k - 1 - kk) * ldb + col];
                ref += t;
                scale += fabs(t);
            }
            if (!(fabs((double)got - ref) <= tol * scale + 1e-30)) {
                if (bad++ < 3)
                    fprintf(stderr, "  %s m=%td n=%td k=%td ldb=%td ldc=%td acc=%d: C[%td][%td] = %.9g, want %.9g\n",
                            v->name, m, n, k, ldb, ldc, accumulate, i, j, got, ref);
            }
        }
    }
    free(a);
    free(c);
    free(c0);
    guarded_free(ap);
    guarded_free(b);
    return bad;
}

static int run_check(void)
{
    int failed = 0;
    for (int vi = 0; vi < NVARIANTS; vi++) {
        const variant *v = &variants[vi];
        if (!v->supported()) {
            printf("%-7s skipped (CPU lacks the ISA)\n", v->name);
            continue;
        }
        const ptrdiff_t mr = *v->mr;
        const ptrdiff_t ms[] = {1, 2, 3, mr - 1, mr, mr + 1, 2 * mr - 1, 2 * mr + 1, 37, 70};
        const ptrdiff_t ks[] = {1, 2, 3, 5, 8, 16, 17, 31, 64, 70};
        long cases = 0, bad = 0;
        /* every n in 1..70 hits each tail width of every tile; m around mr hits the panel edge */
        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
            if (ms[mi] < 1) continue;
            for (ptrdiff_t n = 1; n <= 70; n++) {
                for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
                    const int variant_bits = (int)(cases & 3);
                    const ptrdiff_t ldb = n + ((variant_bits & 1) ? 3 + n % 5 : 0);
                    /* every third case writes C columns with a stride (a column class) */
                    const ptrdiff_t cs = cases % 3 == 2 ? 2 + n % 3 : 1;
                    const ptrdiff_t ldc = (n - 1) * cs + 1 + ((variant_bits & 2) ? 1 + n % 7 : 0);
                    bad += check_one(v, ms[mi], n, ks[ki], ldb, ldc, cs, (int)((cases >> 2) & 1));
                    cases++;
                }
            }
        }
        /* larger shapes cross the kernels' cache blocks in k, m and n */
        const ptrdiff_t big[][3] = {{300, 7, 600},  {33, 49, 1100}, {517, 20, 70}, {65, 300, 300},
                                    {129, 113, 513}, {1, 1, 2049},  {70, 1, 1000}, {1, 200, 1},
                                    {48, 2000, 3},  {19, 257, 27},  {600, 3, 5},   {40, 97, 4700}};
        for (size_t bi = 0; bi < sizeof big / sizeof big[0]; bi++) {
            for (int acc = 0; acc < 2; acc++) {
                /* acc = 1 also strides the C columns by 4 */
                const ptrdiff_t cs = acc ? 4 : 1;
                bad += check_one(v, big[bi][0], big[bi][1], big[bi][2], big[bi][1] + acc * 5,
                                 (big[bi][1] - 1) * cs + 1 + 3 * acc, cs, acc);
                cases++;
            }
        }
        printf("%-7s mr=%-3td %6ld cases: %s\n", v->name, mr, cases, bad ? "FAILED" : "ok");
        failed |= bad != 0;
    }
    return failed;
}

/* ---- bench ---- */
typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *,
                         const float *, const float *, const int *, const float *, const int *,
                         const float *, float *, const int *);
static sgemm_fn sgemm;

static void load_sgemm(void)
{
#ifndef GEMM_PACKED_NO_DLOPEN /* static cross builds: no sgemm column */
    const char *path = getenv("IM2ROW_SGEMM_LIB");
    if (!path || !*path) return;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
        return;
    }
    sgemm = (sgemm_fn)dlsym(h, "scipy_sgemm_");
    if (!sgemm) sgemm = (sgemm_fn)dlsym(h, "sgemm_");
    void (*set_threads)(int) = (void (*)(int))dlsym(h, "scipy_openblas_set_num_threads");
    if (!set_threads) set_threads = (void (*)(int))dlsym(h, "openblas_set_num_threads");
    if (set_threads) set_threads(1);
#endif
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Seconds per call: min over reps of the mean over a batch of ~1 ms, after warm-up.  Short
 * batches and many reps let the minimum dodge preemption on a shared machine. */
static double time_call(const variant *v, const float *ap, const float *a, ptrdiff_t m, ptrdiff_t n,
                        ptrdiff_t k, const float *b, float *c, int reps)
{
    const int im = (int)m, in = (int)n, ik = (int)k;
    const float one = 1.0f, zero = 0.0f;
    const float *brows[8192];
    for (ptrdiff_t kk = 0; kk < k && kk < 8192; kk++) brows[kk] = b + kk * n;
#define CALL()                                                                     \
    do {                                                                           \
        if (v) v->fn(m, n, k, ap, brows, c, n, 1, 0);                              \
        else sgemm("N", "N", &in, &im, &ik, &one, b, &in, a, &ik, &zero, c, &in); \
    } while (0)
    CALL();
    double t = now();
    CALL();
    const double once = now() - t;
    const int batch = once > 0.001 ? 1 : (int)(0.001 / (once + 1e-9)) + 1;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        t = now();
        for (int i = 0; i < batch; i++) CALL();
        const double dt = (now() - t) / batch;
        if (dt < best) best = dt;
    }
#undef CALL
    return best;
}

static int selected(const variant *v, int nsel, char **sel)
{
    if (!v->supported()) return 0;
    for (int i = 0; i < nsel; i++)
        if (strcmp(sel[i], v->name) == 0) return 1;
    return nsel == 0;
}

static int run_bench(int reps, int nsel, char **sel)
{
    static const ptrdiff_t shapes[][3] = {/* m, k, n */
                                          {64, 576, 3136}, {128, 1152, 784}, {256, 2304, 196},
                                          {512, 4608, 49}, {512, 1536, 7},   {64, 192, 728},
                                          {256, 768, 196}, {512, 1536, 49},  {64, 64, 3136},
                                          {2048, 512, 49}, {64, 147, 12544},
                                          /* more shapes a convolution plan produces */
                                          {16, 27, 50176}, {32, 288, 12544}, {128, 1152, 14},
                                          {256, 2304, 28}, {1024, 512, 196}, {2048, 4608, 7}};
    load_sgemm();
    printf("%-18s", "m,k,n");
    if (sgemm) printf(" %8s", "sgemm");
    for (int vi = 0; vi < NVARIANTS; vi++)
        if (selected(&variants[vi], nsel, sel)) printf(" %8s", variants[vi].name);
    if (sgemm) printf("   (GF/s; best/sgemm)");
    printf("\n");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const ptrdiff_t m = shapes[si][0], k = shapes[si][1], n = shapes[si][2];
        const double flops = 2.0 * (double)m * (double)n * (double)k;
        float *a = malloc(sizeof(float) * (size_t)(m * k));
        float *ap = malloc(sizeof(float) * (size_t)((m + 63) * k));
        float *b = malloc(sizeof(float) * (size_t)(k * n));
        float *c = malloc(sizeof(float) * (size_t)(m * n));
        for (ptrdiff_t i = 0; i < m * k; i++) a[i] = frand();
        for (ptrdiff_t i = 0; i < k * n; i++) b[i] = frand();
        char label[64];
        snprintf(label, sizeof label, "%td,%td,%td", m, k, n);
        printf("%-18s", label);
        double ref = 0.0, best = 0.0;
        if (sgemm) {
            ref = flops / time_call(NULL, NULL, a, m, n, k, b, c, reps) * 1e-9;
            printf(" %8.1f", ref);
        }
        for (int vi = 0; vi < NVARIANTS; vi++) {
            const variant *v = &variants[vi];
            if (!selected(v, nsel, sel)) continue;
            im2row_pack_a(ap, a, k, m, k, *v->mr);
            const double gf = flops / time_call(v, ap, NULL, m, n, k, b, c, reps) * 1e-9;
            if (gf > best) best = gf;
            printf(" %8.1f", gf);
        }
        if (sgemm) printf("   x%.2f", best / ref);
        printf("\n");
        fflush(stdout);
        free(a);
        free(ap);
        free(b);
        free(c);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "check") == 0) return run_check();
    if (argc >= 2 && strcmp(argv[1], "bench") == 0)
        return run_bench(argc >= 3 ? atoi(argv[2]) : 30, argc > 3 ? argc - 3 : 0, argv + 3);
    fprintf(stderr, "usage: %s check | bench [reps [variant...]]\n", argv[0]);
    return 2;
}
