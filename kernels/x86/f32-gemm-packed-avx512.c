#if defined(__x86_64__) || defined(_M_X64)
#include <assert.h>
#include <stddef.h>
#include <immintrin.h>

#include "im2row_kernels.h"

void im2row_gemm__avx512(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
                         const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int accumulate);
extern const ptrdiff_t im2row_gemm_mr__avx512;

#define MR 16
const ptrdiff_t im2row_gemm_mr__avx512 = MR;

#ifndef KC
#define KC 512
#endif
#ifndef MC
#define MC 256
#endif
#ifndef TR
#define TR 8
#endif
#ifndef TNV
#define TNV 3
#endif
#ifndef MVT
#define MVT 13
#endif
#ifndef PF
#define PF 0
#endif
#ifndef PFD
#define PFD 8
#endif
#ifndef MVEC
#define MVEC 1
#endif

#define INLINE static inline __attribute__((always_inline))

INLINE void nvec_tile(ptrdiff_t kc, const float *restrict a, const float *restrict b, ptrdiff_t ldb,
                      float *restrict c, ptrdiff_t ldc, ptrdiff_t rows, int acc, __mmask16 mask,
                      const int R, const int NV)
{
    __m512 vacc[16][4];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) vacc[r][v] = _mm512_setzero_ps();
    for (ptrdiff_t kk = 0; kk < kc; kk++) {
        __m512 vb[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV - 1; v++) vb[v] = _mm512_loadu_ps(b + 16 * v);
        vb[NV - 1] = _mm512_maskz_loadu_ps(mask, b + 16 * (NV - 1));
#if PF == 1
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm_prefetch((const char *)(b + 16 * NV + 16 * v), _MM_HINT_T0);
#elif PF == 2
        _mm_prefetch((const char *)(b + PFD * ldb), _MM_HINT_T0);
#endif
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            const __m512 va = _mm512_set1_ps(a[r]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) vacc[r][v] = _mm512_fmadd_ps(va, vb[v], vacc[r][v]);
        }
        a += MR;
        b += ldb;
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        if (r < rows) {
#pragma GCC unroll 4
            for (int v = 0; v < NV - 1; v++) {
                __m512 x = vacc[r][v];
                if (acc) x = _mm512_add_ps(x, _mm512_loadu_ps(c + 16 * v));
                _mm512_storeu_ps(c + 16 * v, x);
            }
            __m512 x = vacc[r][NV - 1];
            if (acc) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, c + 16 * (NV - 1)));
            _mm512_mask_storeu_ps(c + 16 * (NV - 1), mask, x);
        }
        c += ldc;
    }
}

/* m-vectorised tile: P panels (16 rows each) x NC columns; accumulators hold columns of C. */
INLINE void mvec_tile(ptrdiff_t kc, const float *restrict a, ptrdiff_t pstride, const float *restrict b,
                      ptrdiff_t ldb, float *restrict c, ptrdiff_t ldc, ptrdiff_t rows, int acc,
                      const int P, const int NC)
{
    __m512 vacc[4][16];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 16
        for (int j = 0; j < NC; j++) vacc[p][j] = _mm512_setzero_ps();
    for (ptrdiff_t kk = 0; kk < kc; kk++) {
        __m512 va[4];
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) va[p] = _mm512_loadu_ps(a + p * pstride);
#pragma GCC unroll 16
        for (int j = 0; j < NC; j++) {
            const __m512 vb = _mm512_set1_ps(b[j]);
#pragma GCC unroll 4
            for (int p = 0; p < P; p++) vacc[p][j] = _mm512_fmadd_ps(va[p], vb, vacc[p][j]);
        }
        a += MR;
        b += ldb;
    }
    float tmp[16][16];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
#pragma GCC unroll 16
        for (int j = 0; j < NC; j++) _mm512_storeu_ps(tmp[j], vacc[p][j]);
        const ptrdiff_t rp = rows - 16 * p < 16 ? rows - 16 * p : 16;
        for (ptrdiff_t r = 0; r < rp; r++) {
            float *cr = c + (16 * p + r) * ldc;
#pragma GCC unroll 16
            for (int j = 0; j < NC; j++) cr[j] = (acc ? cr[j] : 0.0f) + tmp[j][r];
        }
    }
}

static void nvec_strip(ptrdiff_t mc, ptrdiff_t m_left, ptrdiff_t kc, ptrdiff_t k, const float *a,
                       const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int acc, __mmask16 mask, int nv)
{
    if (nv == 1) {
        for (ptrdiff_t i = 0; i < mc; i += MR)
            nvec_tile(kc, a + i * k, b, ldb, c + i * ldc, ldc, m_left - i, acc, mask, 16, 1);
        return;
    }
    for (ptrdiff_t i = 0; i < mc; i += TR) {
        const float *ap = a + (i / MR) * MR * k + (i % MR);
        const ptrdiff_t rows = m_left - i;
        switch (nv) {
        case 2: nvec_tile(kc, ap, b, ldb, c + i * ldc, ldc, rows, acc, mask, TR, 2); break;
#if TNV >= 3
        case 3: nvec_tile(kc, ap, b, ldb, c + i * ldc, ldc, rows, acc, mask, TR, 3); break;
#endif
#if TNV >= 4
        case 4: nvec_tile(kc, ap, b, ldb, c + i * ldc, ldc, rows, acc, mask, TR, 4); break;
#endif
        }
    }
}

#define MV(P, NC) mvec_tile(kc, ap, MR * k, b, ldb, cp, ldc, rows, acc, P, NC)
#define MVSW(P) switch (nc) { \
        case 1: MV(P, 1); break; case 2: MV(P, 2); break; case 3: MV(P, 3); break; \
        case 4: MV(P, 4); break; case 5: MV(P, 5); break; case 6: MV(P, 6); break; \
        case 7: MV(P, 7); break; case 8: MV(P, 8); break; case 9: MV(P, 9); break; \
        case 10: MV(P, 10); break; case 11: MV(P, 11); break; case 12: MV(P, 12); break; }
static void mvec_strip(ptrdiff_t mc, ptrdiff_t m_left, ptrdiff_t kc, ptrdiff_t k, const float *a,
                       const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, int acc, int nc)
{
    ptrdiff_t i = 0;
    if (nc <= 2) {
        for (; i + 4 * MR <= mc; i += 4 * MR) {
            const float *ap = a + i * k;
            float *cp = c + i * ldc;
            const ptrdiff_t rows = m_left - i;
            if (nc == 1) MV(4, 1); else MV(4, 2);
        }
    }
    for (; i + 2 * MR <= mc; i += 2 * MR) {
        const float *ap = a + i * k;
        float *cp = c + i * ldc;
        const ptrdiff_t rows = m_left - i;
        MVSW(2)
    }
    for (; i < mc; i += MR) {
        const float *ap = a + i * k;
        float *cp = c + i * ldc;
        const ptrdiff_t rows = m_left - i;
        MVSW(1)
    }
}

void im2row_gemm__avx512(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a_packed,
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

    const ptrdiff_t tail = n % 16;
    const ptrdiff_t nvn = (MVEC && (n < 16 || tail < MVT)) ? n - tail : n;
    for (ptrdiff_t k0 = 0; k0 < k; k0 += KC) {
        const ptrdiff_t kc = k - k0 < KC ? k - k0 : KC;
        const int acc = accumulate || k0 != 0;
        for (ptrdiff_t i0 = 0; i0 < m; i0 += MC) {
            const ptrdiff_t mc = m - i0 < MC ? m - i0 : MC;
            const float *ablk = a_packed + i0 * k + k0 * MR;
            const float *bblk = b + k0 * ldb;
            float *cblk = c + i0 * ldc;
            ptrdiff_t j = 0;
            while (j < nvn) {
                const ptrdiff_t vleft = (nvn - j + 15) / 16;
                const int nv = vleft == 1 ? 1 : (vleft == 2 || vleft == 4) ? 2 : 3;
                const ptrdiff_t w = nvn - j < 16 * nv ? nvn - j : 16 * nv;
                const __mmask16 mask = (__mmask16)(0xFFFFu >> (16 * nv - w));
                nvec_strip(mc, m - i0, kc, k, ablk, bblk + j, ldb, cblk + j, ldc, acc, mask, nv);
                j += w;
            }
            while (j < n) {
                const int nc = n - j <= 12 ? (int)(n - j) : (int)(n - j + 1) / 2;
                mvec_strip(mc, m - i0, kc, k, ablk, bblk + j, ldb, cblk + j, ldc, acc, nc);
                j += nc;
            }
        }
    }
}
#endif
