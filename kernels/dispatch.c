/* Run-time kernel selection: one table per ISA compiled into this build, filtered by what the
 * CPU supports.  Detection happens once; everything else asks this file. */
#include <string.h>
#include "im2row_kernels.h"

/* Every SIMD variant of the target architecture is a plain (strong) reference: a build that
 * lacks one of its ISA files fails to link (setup.py links the kernels with --no-undefined)
 * instead of silently dropping that ISA.  Which ISA a CPU gets is decided at run time only. */
extern const ptrdiff_t im2row_gemm_mr__scalar;
extern const im2row_gemm_tile im2row_gemm_tile__scalar;

#if defined(__x86_64__) || defined(_M_X64)
#define IM2ROW_X86 1
void im2row_gather__avx2(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t);
void im2row_scatter_bias__avx2(float *, ptrdiff_t, const float *, ptrdiff_t, float);
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
void im2row_gemm__avx2(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, const float *const *,
                       float *, ptrdiff_t, ptrdiff_t, int, const float *,
                       const im2row_gemm_blocking *, float *);
void im2row_gemm__avx512(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, const float *const *,
                         float *, ptrdiff_t, ptrdiff_t, int, const float *,
                       const im2row_gemm_blocking *, float *);
extern const ptrdiff_t im2row_gemm_mr__avx2;
extern const ptrdiff_t im2row_gemm_mr__avx512;
extern const im2row_gemm_tile im2row_gemm_tile__avx2;
extern const im2row_gemm_tile im2row_gemm_tile__avx512;
#endif

#if defined(__aarch64__)
#define IM2ROW_ARM64 1
void im2row_gather__neon(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t);
void im2row_scatter_bias__neon(float *, ptrdiff_t, const float *, ptrdiff_t, float);
void im2row_dwconv__neon(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                         ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                         ptrdiff_t, ptrdiff_t, float);
void im2row_dwconv_s2__neon(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                            ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, float);
void im2row_gemm__neon(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, const float *const *,
                       float *, ptrdiff_t, ptrdiff_t, int, const float *,
                       const im2row_gemm_blocking *, float *);
extern const ptrdiff_t im2row_gemm_mr__neon;
extern const im2row_gemm_tile im2row_gemm_tile__neon;
#endif

/* f32-igemm-nhwc / f32-dwconv-nhwc (channels-last), strong references like the rest. */
#define IM2ROW_NHWC_DECLARE(isa)                                                                   \
    void im2row_igemm_nhwc__##isa(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,            \
                                  ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,                      \
                                  const float *const *, ptrdiff_t,                                 \
                                  const float *, float *, ptrdiff_t);                              \
    void im2row_dwconv_nhwc__##isa(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *const *,          \
                                   ptrdiff_t, ptrdiff_t, const float *, float *, ptrdiff_t);       \
    extern const ptrdiff_t im2row_igemm_nhwc_mr__##isa;                                             \
    extern const ptrdiff_t im2row_igemm_nhwc_nr__##isa;
#define IM2ROW_NHWC_SET(t, isa)                                                                    \
    do {                                                                                           \
        (t).igemm_nhwc = im2row_igemm_nhwc__##isa;                                                 \
        (t).igemm_nhwc_mr = im2row_igemm_nhwc_mr__##isa;                                           \
        (t).igemm_nhwc_nr = im2row_igemm_nhwc_nr__##isa;                                           \
        (t).dwconv_nhwc = im2row_dwconv_nhwc__##isa;                                               \
    } while (0)
#ifdef IM2ROW_X86
void im2row_transpose__avx2(ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t);
IM2ROW_NHWC_DECLARE(avx2)
IM2ROW_NHWC_DECLARE(avx512)
#endif
#ifdef IM2ROW_ARM64
void im2row_transpose__neon(ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t);
IM2ROW_NHWC_DECLARE(neon)
#endif

int im2row_cpu_has_avx2_fma(void) {
#ifdef IM2ROW_X86
    /* libgcc's detection also checks that the OS saves the YMM state (XGETBV). */
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int im2row_cpu_has_avx512(void) {
#ifdef IM2ROW_X86
    __builtin_cpu_init();
    return im2row_cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

int im2row_cpu_has_neon(void) {
#ifdef IM2ROW_ARM64
    return 1; /* ASIMD with FMA is mandatory in ARMv8-A */
#else
    return 0;
#endif
}

static im2row_kernels tables[4];
static int table_count = -1;

static void detect_once(void) {
    int n = 0;
    if (table_count >= 0) return;
#ifdef IM2ROW_X86
    if (im2row_cpu_has_avx512()) {
        im2row_kernels t = {"avx512", im2row_gather__avx2, im2row_scatter_bias__avx2,
                            im2row_dwconv__avx512, im2row_dwconv_s2__avx512, im2row_gemm__avx512, 0,
                            NULL};
        t.gemm_mr = im2row_gemm_mr__avx512;
        IM2ROW_NHWC_SET(t, avx512);
        t.transpose = im2row_transpose__avx2;
        t.gemm_tile = &im2row_gemm_tile__avx512;
        tables[n++] = t;
    }
    if (im2row_cpu_has_avx2_fma()) {
        im2row_kernels t = {"avx2", im2row_gather__avx2, im2row_scatter_bias__avx2,
                            im2row_dwconv__avx2, im2row_dwconv_s2__avx2, im2row_gemm__avx2, 0,
                            NULL};
        t.gemm_mr = im2row_gemm_mr__avx2;
        IM2ROW_NHWC_SET(t, avx2);
        t.transpose = im2row_transpose__avx2;
        t.gemm_tile = &im2row_gemm_tile__avx2;
        tables[n++] = t;
    }
#endif
#ifdef IM2ROW_ARM64
    if (im2row_cpu_has_neon()) {
        im2row_kernels t = {"neon", im2row_gather__neon, im2row_scatter_bias__neon,
                            im2row_dwconv__neon, im2row_dwconv_s2__neon, im2row_gemm__neon, 0,
                            NULL};
        t.gemm_mr = im2row_gemm_mr__neon;
        IM2ROW_NHWC_SET(t, neon);
        t.transpose = im2row_transpose__neon;
        t.gemm_tile = &im2row_gemm_tile__neon;
        tables[n++] = t;
    }
#endif
    {
        im2row_kernels t = {"scalar", im2row_gather__scalar, im2row_scatter_bias__scalar,
                            im2row_dwconv__scalar, im2row_dwconv_s2__scalar, im2row_gemm__scalar, 0,
                            NULL};
        t.gemm_mr = im2row_gemm_mr__scalar;
        t.igemm_nhwc = im2row_igemm_nhwc__scalar;
        t.igemm_nhwc_mr = im2row_igemm_nhwc_mr__scalar;
        t.igemm_nhwc_nr = im2row_igemm_nhwc_nr__scalar;
        t.dwconv_nhwc = im2row_dwconv_nhwc__scalar;
        t.transpose = im2row_transpose__scalar;
        t.gemm_tile = &im2row_gemm_tile__scalar;
        tables[n++] = t;
    }
    table_count = n;
}

int im2row_kernels_count(void) {
    detect_once();
    return table_count;
}

const im2row_kernels *im2row_kernels_at(int index) {
    detect_once();
    return (index >= 0 && index < table_count) ? &tables[index] : NULL;
}

const im2row_kernels *im2row_kernels_find(const char *isa) {
    int i;
    detect_once();
    for (i = 0; i < table_count; i++)
        if (strcmp(tables[i].isa, isa) == 0) return &tables[i];
    return NULL;
}
