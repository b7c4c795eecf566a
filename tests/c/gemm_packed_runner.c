/* Standalone runner for the f32-gemm-packed kernel family.
 *
 *   gemm_packed check   every compiled variant usable on this CPU against a double-precision
 *                       naive GEMM over many odd shapes and blockings (the model's on several
 *                       cache hierarchies, and kc / mc / nc at their edges), B strips copied
 *                       or read in place; exit status 1 on any mismatch.
 *   gemm_packed bench [reps [variant[:inplace]...]]
 *                       GF/s of the variants (all by default) and of OpenBLAS sgemm at
 *                       convolution shapes, side by side: min over reps after warm-up, 1 thread,
 *                       and % of this ISA's FMA peak (a register-only loop timed at start).
 *                       Environment: IM2ROW_BENCH_SHAPES, IM2ROW_GEMM_KC/_KCM/_MC/_NC/_COPY.
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
extern const im2row_gemm_tile im2row_gemm_tile__scalar;
#define GEMM_PROTO(isa)                                                                                   \
    void im2row_gemm__##isa(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, const float *const *, float *, \
                            ptrdiff_t, ptrdiff_t, int, const float *, const im2row_gemm_blocking *,       \
                            float *);                                                                     \
    extern const ptrdiff_t im2row_gemm_mr__##isa;                                                          \
    extern const im2row_gemm_tile im2row_gemm_tile__##isa;
#if defined(__x86_64__) || defined(_M_X64)
GEMM_PROTO(avx2)
GEMM_PROTO(avx512)
static int has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
static int has_avx512(void)
{
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
#endif
#if defined(__aarch64__)
GEMM_PROTO(neon)
static int has_neon(void) { return 1; }
#endif
static int always(void) { return 1; }

typedef struct {
    const char *name;
    im2row_gemm_fn fn;
    const ptrdiff_t *mr;
    const im2row_gemm_tile *tile;
    int (*supported)(void);
} variant;

static const variant variants[] = {
#if defined(__x86_64__) || defined(_M_X64)
    {"avx512", im2row_gemm__avx512, &im2row_gemm_mr__avx512, &im2row_gemm_tile__avx512, has_avx512},
    {"avx2", im2row_gemm__avx2, &im2row_gemm_mr__avx2, &im2row_gemm_tile__avx2, has_avx2},
#endif
#if defined(__aarch64__)
    {"neon", im2row_gemm__neon, &im2row_gemm_mr__neon, &im2row_gemm_tile__neon, has_neon},
#endif
    {"scalar", im2row_gemm__scalar, &im2row_gemm_mr__scalar, &im2row_gemm_tile__scalar, always},
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
/* blocking: NULL = the model's; use_work: give the kernel a (guarded) copy buffer, else it reads
 * B in place; with_bias: a bias of m floats ending at a guard page. */
static long check_one(const variant *v, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, ptrdiff_t ldb,
                      ptrdiff_t ldc, ptrdiff_t cs, int accumulate, int with_bias,
                      const im2row_gemm_blocking *blocking, int use_work)
{
    const ptrdiff_t mr = *v->mr;
    const ptrdiff_t mp = (m + mr - 1) / mr * mr;
    const float sentinel = -12345.0f;
    float *a = malloc(sizeof(float) * (size_t)(m * k));
    guarded ap = guarded_alloc((size_t)(mp * k));
    guarded b = guarded_alloc((size_t)((k - 1) * ldb + n));
    guarded bias = guarded_alloc((size_t)m);
    const ptrdiff_t crows = m + 1; /* one extra row must stay untouched */
    float *c = malloc(sizeof(float) * (size_t)(crows * ldc));
    float *c0 = malloc(sizeof(float) * (size_t)(crows * ldc));
    long bad = 0;

    for (ptrdiff_t i = 0; i < m * k; i++) a[i] = frand();
    for (ptrdiff_t i = 0; i < (k - 1) * ldb + n; i++) b.p[i] = frand();
    for (ptrdiff_t i = 0; i < m; i++) bias.p[i] = 4.0f * frand();
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
    /* use_work forces the copy (the model's rule copies only at n of a page or more) */
    im2row_gemm_blocking forced = {.copy_b = 1};
    if (blocking) forced = *blocking, forced.copy_b = 1;
    const im2row_gemm_blocking *blk = use_work ? &forced : blocking;
    const ptrdiff_t work_n = im2row_gemm_work_floats(v->tile, m, n, k, blk);
    guarded work = guarded_alloc((size_t)(work_n > 0 ? work_n : 1));
    v->fn(m, n, k, ap.p, brows, c, ldc, cs, accumulate, with_bias ? bias.p : NULL, blk,
          use_work && work_n > 0 ? work.p : NULL);
    guarded_free(work);
    free(brows);

    const double tol = 1e-5 * sqrt((double)k) + 1e-6;
    for (ptrdiff_t i = 0; i < crows; i++) {
        for (ptrdiff_t j = 0; j < ldc; j++) {
            const float got = c[i * ldc + j];
            if (i >= m || j % cs != 0 || j / cs >= n) {
                if (memcmp(&got, &c0[i * ldc + j], sizeof got) != 0) {
                    if (bad++ < 3)
                        fprintf(stderr, "  %s m=%td n=%td k=%td ldb=%td ldc=%td acc=%d bias=%d kc=%td mc=%td nc=%td work=%d: "
                                "wrote outside C at (%td,%td)\n", v->name, m, n, k, ldb, ldc, accumulate, with_bias,
                                blocking ? blocking->kc : 0, blocking ? blocking->mc : 0,
                                blocking ? blocking->nc : 0, use_work, i, j);
                }
                continue;
            }
            const ptrdiff_t col = j / cs;
            double ref = (accumulate ? (double)c0[i * ldc + j] : 0.0) + (with_bias ? (double)bias.p[i] : 0.0);
            double scale = fabs(ref);
            for (ptrdiff_t kk = 0; kk < k; kk++) {
                const double t = (double)a[i * k + kk] * (double)b.p[(k - 1 - kk) * ldb + col];
                ref += t;
                scale += fabs(t);
            }
            if (!(fabs((double)got - ref) <= tol * scale + 1e-30)) {
                if (bad++ < 3)
                    fprintf(stderr, "  %s m=%td n=%td k=%td ldb=%td ldc=%td acc=%d bias=%d kc=%td mc=%td nc=%td work=%d: "
                            "C[%td][%td] = %.9g, want %.9g\n", v->name, m, n, k, ldb, ldc, accumulate, with_bias,
                            blocking ? blocking->kc : 0, blocking ? blocking->mc : 0,
                            blocking ? blocking->nc : 0, use_work, i, j, got, ref);
            }
        }
    }
    free(a);
    free(c);
    free(c0);
    guarded_free(ap);
    guarded_free(b);
    guarded_free(bias);
    return bad;
}

/* Blockings at their edges and tails: kc of 1, primes, k - 1, k, past k; mc of one panel, a
 * few, past m; nc of one strip, two, past n; and the model's own choice for several cache
 * hierarchies (small and large L1 / L2, low associativity, no L3), on shapes with m, n, k
 * of 1, primes and sizes past every block. */
static long check_blockings(const variant *v, long *bad)
{
    const ptrdiff_t mr = *v->mr, nr = v->tile->nr > 0 ? v->tile->nr : 8;
    const ptrdiff_t shapes[][3] = {{1, 1, 1},         {1, 97, 13},         {37, 1, 29},
                                   {mr + 1, 2 * nr + 5, 67}, {3 * mr - 1, 3 * nr + 1, 31},
                                   {53, nr + 13, 101}, {2 * mr, 4 * nr, 64}};
    long cases = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const ptrdiff_t m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
        const ptrdiff_t kcs[] = {1, 2, 7, 16, k - 1, k, k + 5};
        const ptrdiff_t mcs[] = {mr, 2 * mr, 3 * mr, m + mr};
        const ptrdiff_t ncs[] = {nr, 2 * nr, n + 1};
        for (size_t a = 0; a < sizeof kcs / sizeof kcs[0]; a++) {
            if (kcs[a] < 1) continue;
            for (size_t b = 0; b < sizeof mcs / sizeof mcs[0]; b++) {
                for (size_t c = 0; c < sizeof ncs / sizeof ncs[0]; c++) {
                    /* every other case slices the m-tiles differently from the n-tiles */
                    const im2row_gemm_blocking blk = {.kc = kcs[a], .mc = mcs[b], .nc = ncs[c],
                                                      .kc_m = cases & 8 ? kcs[(a + 3) % 7] : 0};
                    const int acc = (int)(cases & 1);
                    const ptrdiff_t cs = cases % 3 == 1 ? 3 : 1;
                    const ptrdiff_t ldc = (n - 1) * cs + 1 + (cases & 2 ? 2 : 0);
                    *bad += check_one(v, m, n, k, n + (cases & 4 ? 3 : 0), ldc, cs, acc,
                                      (int)((cases >> 4) & 1), &blk, cases % 7 != 6);
                    cases++;
                }
            }
        }
    }
    /* cache hierarchies: l1 bytes/ways, l2 bytes/ways, l3 bytes/ways, sharing, line */
    const im2row_cache_info hosts[] = {
        {32768, 8, 524288, 8, 33554432, 16, 16, 64, 4096, "zen3"},  {32768, 8, 1048576, 8, 33554432, 16, 2, 64, 4096, "zen4"},
        {49152, 12, 1048576, 16, 33554432, 16, 16, 64, 4096, "zen5"}, {32768, 2, 1048576, 16, 0, 0, 1, 64, 4096, "a72"},
        {16384, 4, 262144, 4, 0, 0, 1, 32, 4096, "small"},          {65536, 4, 2097152, 16, 8388608, 16, 4, 128, 16384, "m1"}};
    const ptrdiff_t big[][3] = {{150, 300, 600}, {67, 500, 1313}, {2 * mr + 3, 53, 4700}};
    for (size_t h = 0; h < sizeof hosts / sizeof hosts[0]; h++) {
        im2row_gemm_blocking blk;
        im2row_gemm_blocking_model(v->tile, &hosts[h], &blk);
        if (v->tile->nr > 0 && (blk.kc * v->tile->nr * 4 > hosts[h].l1d_bytes || blk.mc * blk.kc * 4 > hosts[h].l2_bytes ||
                                blk.kc_m * v->tile->nr_m * 4 > hosts[h].l1d_bytes ||
                                blk.mc % mr != 0 || (hosts[h].l3_bytes > 0 && blk.nc % v->tile->nr != 0))) {
            fprintf(stderr, "  %s model for %s: kc=%td mc=%td nc=%td does not fit its caches\n", v->name,
                    hosts[h].source, blk.kc, blk.mc, blk.nc);
            (*bad)++;
        }
        for (size_t bi = 0; bi < sizeof big / sizeof big[0]; bi++) {
            /* a small nc too, so that the panel loop runs at these sizes */
            im2row_gemm_blocking b2 = blk;
            if (bi == 1) b2.nc = 2 * nr;
            *bad += check_one(v, big[bi][0], big[bi][1], big[bi][2], big[bi][1] + 1, big[bi][1], 1,
                              (int)(bi & 1), (int)(h & 1), &b2, 1);
            *bad += check_one(v, big[bi][0], big[bi][1], big[bi][2], big[bi][1], 2 * big[bi][1], 2, 1,
                              (int)((h + bi) & 1), &b2, 1);
            cases += 2;
        }
    }
    return cases;
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
                    /* every fifth case reads B in place (no work buffer) */
                    /* bias on half the cases, across accumulate (bit 2) and the stride */
                    bad += check_one(v, ms[mi], n, ks[ki], ldb, ldc, cs, (int)((cases >> 2) & 1),
                                     (int)((cases / 7) & 1), NULL, cases % 5 != 4);
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
                                 (big[bi][1] - 1) * cs + 1 + 3 * acc, cs, acc, (int)(bi & 1) != acc, NULL, 1);
                cases++;
            }
        }
        cases += check_blockings(v, &bad);
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

/* ---- the host's FMA peak: independent FMAs on registers only, no memory operand ----
 * 12 independent chains: more than latency (4) x pipes (2) on every x86 core we know,
 * so the loop runs at the FMA throughput. */
#define PEAK_LOOP(VT, SET1, FMA, ADD, LANES)                                             \
    VT acc[12];                                                                          \
    const VT x = SET1(1.0000001f), y = SET1(-0.0000001f);                                \
    for (int i = 0; i < 12; i++) acc[i] = SET1((float)i);                               \
    for (long it = 0; it < iters; it++) {                                                \
        _Pragma("GCC unroll 12") for (int i = 0; i < 12; i++) acc[i] = FMA(acc[i], x, y); \
    }                                                                                    \
    VT sum = acc[0];                                                                     \
    for (int i = 1; i < 12; i++) sum = ADD(sum, acc[i]);                                 \
    float out[LANES];                                                                    \
    memcpy(out, &sum, sizeof out);                                                       \
    return 24.0 * LANES * (double)iters + 0.0 * out[0];
#if defined(__aarch64__)
#define NEON_FMA(acc, x, y) vfmaq_f32(y, acc, x) /* acc * x + y, as on x86 */
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
__attribute__((target("avx2,fma"))) static double fma_loop_avx2(long iters)
{
    PEAK_LOOP(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, 8)
}
__attribute__((target("avx512f"))) static double fma_loop_avx512(long iters)
{
    PEAK_LOOP(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, 16)
}
#endif

#if defined(__aarch64__)
#include <arm_neon.h>
static double fma_loop_neon(long iters)
{
    PEAK_LOOP(float32x4_t, vdupq_n_f32, NEON_FMA, vaddq_f32, 4)
}
#endif

/* GF/s of the register-only FMA loop of this variant's ISA (best of 20 runs of ~5 ms); 0 when
 * there is none (scalar). */
static double fma_peak(const char *isa)
{
    double (*loop)(long) = NULL;
#if defined(__x86_64__) || defined(_M_X64)
    if (strcmp(isa, "avx2") == 0) loop = fma_loop_avx2;
    if (strcmp(isa, "avx512") == 0) loop = fma_loop_avx512;
#endif
#if defined(__aarch64__)
    if (strcmp(isa, "neon") == 0) loop = fma_loop_neon;
#endif
    if (!loop) return 0.0;
    double best = 0.0;
    for (int r = 0; r < 20; r++) {
        const double t = now();
        const double flops = loop(200000);
        const double gf = flops / (now() - t) * 1e-9;
        if (gf > best) best = gf;
    }
    return best;
}

/* IM2ROW_GEMM_KC / _KCM / _MC / _NC / _COPY override the model in the bench (0 or unset: the model). */
static ptrdiff_t env_size(const char *name)
{
    const char *s = getenv(name);
    return s && *s ? (ptrdiff_t)atol(s) : 0;
}

/* Seconds per call: min over reps of the mean over a batch of ~1 ms, after warm-up.  Short
 * batches and many reps let the minimum dodge preemption on a shared machine.  The packed
 * kernels get a work buffer (copied B strips) as the library gives them. */
static double time_call(const variant *v, const float *ap, const float *a, ptrdiff_t m, ptrdiff_t n,
                        ptrdiff_t k, const float *b, float *c, int reps, const im2row_gemm_blocking *blk,
                        int inplace)
{
    const int im = (int)m, in = (int)n, ik = (int)k;
    const float one = 1.0f, zero = 0.0f;
    const float **brows = malloc(sizeof(*brows) * (size_t)k);
    for (ptrdiff_t kk = 0; kk < k; kk++) brows[kk] = b + kk * n;
    float *work = v && !inplace ? malloc(sizeof(float) * (size_t)(im2row_gemm_work_floats(v->tile, m, n, k, blk) + 1)) : NULL;
#define CALL()                                                                     \
    do {                                                                           \
        if (v) v->fn(m, n, k, ap, brows, c, n, 1, 0, NULL, blk, work);                   \
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
    free(work);
    free(brows);
    return best;
}

/* One column of the table: a variant, with B strips copied (as the library runs it) or, for
 * "<name>:inplace", read in place (work = NULL), to compare the two in one run. */
typedef struct {
    const variant *v;
    int inplace;
    double peak;
    char label[24];
} column;

static int bench_columns(int nsel, char **sel, column *cols)
{
    int n = 0;
    for (int vi = 0; vi < NVARIANTS; vi++) {
        if (!variants[vi].supported()) continue;
        for (int i = 0; i < (nsel ? nsel : 1); i++) {
            const char *name = nsel ? sel[i] : variants[vi].name;
            const size_t len = strlen(variants[vi].name);
            if (strncmp(name, variants[vi].name, len) != 0) continue;
            if (name[len] != '\0' && strcmp(name + len, ":inplace") != 0) continue;
            cols[n].v = &variants[vi];
            cols[n].inplace = name[len] != '\0';
            snprintf(cols[n].label, sizeof cols[n].label, "%s", name);
            n++;
        }
    }
    return n;
}

static int run_bench(int reps, int nsel, char **sel)
{
    static const ptrdiff_t all_shapes[][3] = {/* m, k, n: im2row GEMMs of the built-in suites */
                                              {64, 576, 3136}, {128, 1152, 784}, {256, 2304, 196},
                                              {512, 4608, 49}, {512, 1536, 7},   {64, 192, 728},
                                              {256, 768, 196}, {512, 1536, 49},  {64, 64, 3136},
                                              {2048, 512, 49}, {64, 147, 12544},
                                              /* more shapes a convolution plan produces */
                                              {16, 27, 50176}, {32, 288, 12544}, {128, 1152, 14},
                                              {256, 2304, 28}, {1024, 512, 196}, {2048, 4608, 7}};
    /* IM2ROW_BENCH_SHAPES="m,k,n;m,k,n" replaces the list (e.g. for cachegrind) */
    ptrdiff_t shapes[64][3];
    size_t nshapes = 0;
    const char *list = getenv("IM2ROW_BENCH_SHAPES");
    if (list && *list) {
        long a, b, c2;
        int used;
        while (nshapes < 64 && sscanf(list, "%ld,%ld,%ld%n", &a, &b, &c2, &used) == 3) {
            shapes[nshapes][0] = a, shapes[nshapes][1] = b, shapes[nshapes][2] = c2;
            nshapes++;
            list += used;
            if (*list == ';') list++;
        }
    } else {
        nshapes = sizeof all_shapes / sizeof all_shapes[0];
        memcpy(shapes, all_shapes, sizeof all_shapes);
    }
    /* IM2ROW_GEMM_COPY=1 copies B strips at every n, -1 never (default: the model's rule) */
    const im2row_gemm_blocking blk = {.kc = env_size("IM2ROW_GEMM_KC"), .kc_m = env_size("IM2ROW_GEMM_KCM"),
                                      .mc = env_size("IM2ROW_GEMM_MC"), .nc = env_size("IM2ROW_GEMM_NC"),
                                      .copy_b = (int)env_size("IM2ROW_GEMM_COPY")};
    load_sgemm();
    im2row_cache_info caches;
    im2row_cache_info_get(&caches);
    printf("caches (%s): L1D %td KB/%td-way, L2 %td KB/%td-way, L3 %td KB/%td-way shared by %td, line %td B\n",
           caches.source, caches.l1d_bytes / 1024, caches.l1d_ways, caches.l2_bytes / 1024, caches.l2_ways,
           caches.l3_bytes / 1024, caches.l3_ways, caches.l3_sharing, caches.line_bytes);
    column cols[2 * NVARIANTS + 8];
    const int ncols = bench_columns(nsel < 2 * NVARIANTS ? nsel : 2 * NVARIANTS, sel, cols);
    for (int ci = 0; ci < ncols; ci++) {
        cols[ci].peak = fma_peak(cols[ci].v->name);
        if (cols[ci].peak > 0.0 && (ci == 0 || cols[ci - 1].v != cols[ci].v)) {
            im2row_gemm_blocking model;
            im2row_gemm_blocking_resolve(cols[ci].v->tile, 1 << 20, 1 << 20, 1 << 20, &blk, &model);
            printf("%-7s FMA peak %.1f GF/s (register-only loop); blocking kc=%td kc_m=%td mc=%td nc=%td (%s)\n",
                   cols[ci].v->name, cols[ci].peak, model.kc, model.kc_m, model.mc, model.nc,
                   blk.kc || blk.mc || blk.nc ? "IM2ROW_GEMM_* override" : "model");
        }
    }
    printf("%-18s", "m,k,n");
    if (sgemm) printf(" %8s", "sgemm");
    for (int ci = 0; ci < ncols; ci++) printf(" %8s %5s", cols[ci].label, "%peak");
    if (sgemm) printf("   (GF/s; best/sgemm)");
    printf("\n");
    for (size_t si = 0; si < nshapes; si++) {
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
            ref = flops / time_call(NULL, NULL, a, m, n, k, b, c, reps, NULL, 1) * 1e-9;
            printf(" %8.1f", ref);
        }
        for (int ci = 0; ci < ncols; ci++) {
            const variant *v = cols[ci].v;
            im2row_pack_a(ap, a, k, m, k, *v->mr);
            const double gf = flops / time_call(v, ap, NULL, m, n, k, b, c, reps, &blk, cols[ci].inplace) * 1e-9;
            if (gf > best) best = gf;
            if (cols[ci].peak > 0.0) printf(" %8.1f %4.0f%%", gf, 100.0 * gf / cols[ci].peak);
            else printf(" %8.1f %5s", gf, "-");
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
    fprintf(stderr, "usage: %s check | bench [reps [variant[:inplace]...]]\n", argv[0]);
    return 2;
}
