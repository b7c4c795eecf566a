#if defined(__x86_64__) || defined(_M_X64)
#include <assert.h>
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"

void im2row_gemm__avx2(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
                       const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int accumulate);
extern const ptrdiff_t im2row_gemm_mr__avx2;

#define MR 8
const ptrdiff_t im2row_gemm_mr__avx2 = MR;

#ifndef KC
#define KC 256
#endif
#ifndef MC
#define MC 256
#endif
#ifndef TR
#define TR 4
#endif
#ifndef TNV
#define TNV 3
#endif

#define INLINE static inline __attribute__((always_inline))

INLINE void nvec_tile(ptrdiff_t kc, const float *restrict a, const float *restrict b, ptrdiff_t ldb,
                      float *restrict c, ptrdiff_t ldc, ptrdiff_t rows, int acc, const int R, const int NV)
{
    __m256 vacc[8][4];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) vacc[r][v] = _mm256_setzero_ps();
    for (ptrdiff_t kk = 0; kk < kc; kk++) {
        __m256 vb[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) vb[v] = _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m256 va = _mm256_broadcast_ss(a + r);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) vacc[r][v] = _mm256_fmadd_ps(va, vb[v], vacc[r][v]);
        }
        a += MR;
        b += ldb;
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (r < rows) {
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                __m256 x = vacc[r][v];
                if (acc) x = _mm256_add_ps(x, _mm256_loadu_ps(c + 8 * v));
                _mm256_storeu_ps(c + 8 * v, x);
            }
        }
        c += ldc;
    }
}

INLINE void mvec_tile(ptrdiff_t kc, const float *restrict a, ptrdiff_t pstride, const float *restrict b,
                      ptrdiff_t ldb, float *restrict c, ptrdiff_t ldc, ptrdiff_t rows, int acc,
                      const int P, const int NC)
{
    __m256 vacc[4][8];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 8
        for (int j = 0; j < NC; j++) vacc[p][j] = _mm256_setzero_ps();
    for (ptrdiff_t kk = 0; kk < kc; kk++) {
        __m256 va[4];
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) va[p] = _mm256_loadu_ps(a + p * pstride);
#pragma GCC unroll 8
        for (int j = 0; j < NC; j++) {
            const __m256 vb = _mm256_broadcast_ss(b + j);
#pragma GCC unroll 4
            for (int p = 0; p < P; p++) vacc[p][j] = _mm256_fmadd_ps(va[p], vb, vacc[p][j]);
        }
        a += MR;
        b += ldb;
    }
    float tmp[8][8];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
#pragma GCC unroll 8
        for (int j = 0; j < NC; j++) _mm256_storeu_ps(tmp[j], vacc[p][j]);
        const ptrdiff_t rp = rows - 8 * p < 8 ? rows - 8 * p : 8;
        for (ptrdiff_t r = 0; r < rp; r++) {
            float *cr = c + (8 * p + r) * ldc;
#pragma GCC unroll 8
            for (int j = 0; j < NC; j++) cr[j] = (acc ? cr[j] : 0.0f) + tmp[j][r];
        }
    }
}

static void nvec_strip(ptrdiff_t mc, ptrdiff_t m_left, ptrdiff_t kc, ptrdiff_t k, const float *a,
                       const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int acc, int nv)
{
    for (ptrdiff_t i = 0; i < mc; i += TR) {
        const float *ap = a + (i / MR) * MR * k + (i % MR);
        const ptrdiff_t rows = m_left - i;
        switch (nv) {
        case 1: nvec_tile(kc, ap, b, ldb, c + i * ldc, ldc, rows, acc, TR, 1); break;
        case 2: nvec_tile(kc, ap, b, ldb, c + i * ldc, ldc, rows, acc, TR, 2); break;
#if TNV >= 3
        case 3: nvec_tile(kc, ap, b, ldb, c + i * ldc, ldc, rows, acc, TR, 3); break;
#endif
        }
    }
}

#define MV(P, NC) mvec_tile(kc, ap, MR * k, b, ldb, cp, ldc, rows, acc, P, NC)
static void mvec_strip(ptrdiff_t mc, ptrdiff_t m_left, ptrdiff_t kc, ptrdiff_t k, const float *a,
                       const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int acc, int nc)
{
    ptrdiff_t i = 0;
    const int P = nc <= 2 ? 4 : 2;
    for (; i + P * MR <= mc; i += P * MR) {
        const float *ap = a + i * k;
        float *cp = c + i * ldc;
        const ptrdiff_t rows = m_left - i;
        switch (nc) {
        case 1: MV(4, 1); break;
        case 2: MV(4, 2); break;
        case 3: MV(2, 3); break;
        case 4: MV(2, 4); break;
        }
    }
    for (; i < mc; i += MR) {
        const float *ap = a + i * k;
        float *cp = c + i * ldc;
        const ptrdiff_t rows = m_left - i;
        switch (nc) {
        case 1: MV(1, 1); break;
        case 2: MV(1, 2); break;
        case 3: MV(1, 3); break;
        case 4: MV(1, 4); break;
        }
    }
}

void im2row_gemm__avx2(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
                       const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int accumulate)
{
    assert(m >= 1);
    assert(n >= 1);
    assert(k >= 1);
    assert(a_packed != NULL);
    assert(b != NULL);
    assert(c != NULL);
    assert(ldb >= n);
    assert(ldc >= n);

    const ptrdiff_t nvn = n & ~(ptrdiff_t)7;
    for (ptrdiff_t k0 = 0; k0 < k; k0 += KC) {
        const ptrdiff_t kc = k - k0 < KC ? k - k0 : KC;
        const int acc = accumulate || k0 != 0;
        for (ptrdiff_t i0 = 0; i0 < m; i0 += MC) {
            const ptrdiff_t mc = m - i0 < MC ? m - i0 : MC;
            const float *ablk = a_packed + i0 * k + k0 * MR;
            const float *bblk = b + k0 * ldb;
            float *cblk = c + i0 * ldc;
            ptrdiff_t j = 0;
            for (; j + 8 * TNV <= nvn; j += 8 * TNV)
                nvec_strip(mc, m - i0, kc, k, ablk, bblk + j, ldb, cblk + j, ldc, acc, TNV);
            if (j < nvn) {
                nvec_strip(mc, m - i0, kc, k, ablk, bblk + j, ldb, cblk + j, ldc, acc, (int)((nvn - j) / 8));
                j = nvn;
            }
            while (j < n) {
                const int nc = n - j < 4 ? (int)(n - j) : 4;
                mvec_strip(mc, m - i0, kc, k, ablk, bblk + j, ldb, cblk + j, ldc, acc, nc);
                j += nc;
            }
        }
    }
}
#endif
