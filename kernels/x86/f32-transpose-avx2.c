/* f32-transpose, AVX2 variant (also the AVX-512 table's: the 8 x 8 register transpose moves
 * a block per 24 shuffles, well under the cost of its 16 line loads and stores).
 * Contract (im2row_kernels.h): dst[j*ldd + i] = src[i*lds + j], i < rows, j < cols. */
#include <immintrin.h>

#include "im2row_kernels.h"

static inline void transpose_8x8(const float *src, ptrdiff_t lds, float *dst, ptrdiff_t ldd)
{
    __m256 r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lds);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);       /* a0 b0 a1 b1 | a4 b4 a5 b5 */
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);   /* a2 b2 a3 b3 | a6 b6 a7 b7 */
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);      /* a0 b0 c0 d0 | a4 .. */
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);  /* a1 b1 c1 d1 | a5 .. */
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        _mm256_storeu_ps(dst + j * ldd, _mm256_permute2f128_ps(u[j], u[j + 4], 0x20));
        _mm256_storeu_ps(dst + (j + 4) * ldd, _mm256_permute2f128_ps(u[j], u[j + 4], 0x31));
    }
}

void im2row_transpose__avx2(ptrdiff_t rows, ptrdiff_t cols, const float *src, ptrdiff_t lds,
                            float *dst, ptrdiff_t ldd)
{
    if (rows <= 0 || cols <= 0) return;   /* the masks below assume both >= 0 */
    ptrdiff_t rows8 = rows & ~(ptrdiff_t)7, cols8 = cols & ~(ptrdiff_t)7;
    /* Columns outer, rows inner (IM2ROW_TRANSPOSE_LINE at a time): destination rows are
     * written whole while their lines are in L1 and each source line is used up in one pass,
     * whatever the sizes (rows first measured 4-10x slower once the destination outgrew L1:
     * every pass re-fetched each partly written line). */
    for (ptrdiff_t j0 = 0; j0 < cols8; j0 += IM2ROW_TRANSPOSE_LINE) {
        ptrdiff_t j1 = j0 + IM2ROW_TRANSPOSE_LINE < cols8 ? j0 + IM2ROW_TRANSPOSE_LINE : cols8;
        for (ptrdiff_t i = 0; i < rows8; i += 8)
            for (ptrdiff_t j = j0; j < j1; j += 8)
                transpose_8x8(src + i * lds + j, lds, dst + j * ldd + i, ldd);
    }
    if (cols8 < cols)
        im2row_transpose__scalar(rows8, cols - cols8, src + cols8, lds, dst + cols8 * ldd, ldd);
    if (rows8 < rows)
        im2row_transpose__scalar(rows - rows8, cols, src + rows8 * lds, lds, dst + rows8, ldd);
}
