/* f32-transpose, AVX2 variant (also the AVX-512 table's: the 8 x 8 register transpose moves
 * a block per 24 shuffles, well under the cost of its 16 line loads and stores).  Edge blocks
 * (fewer than 8 rows or columns left) go through the same registers with masked loads and
 * stores: the channels-last blocks of small maps are 7-14 wide, so their tails are most of the
 * work, and a scalar tail ran them at one float per store.
 * Contract (im2row_kernels.h): dst[j*ldd + i] = src[i*lds + j], i < rows, j < cols. */
#include <immintrin.h>

#include "im2row_kernels.h"

/* u[j] = column j of the 8 rows r[0..7] */
static inline void transpose_regs(const __m256 r[8], __m256 u[8])
{
    __m256 t[8], v[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);       /* a0 b0 a1 b1 | a4 b4 a5 b5 */
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);   /* a2 b2 a3 b3 | a6 b6 a7 b7 */
    }
    for (int i = 0; i < 8; i += 4) {
        v[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);      /* a0 b0 c0 d0 | a4 .. */
        v[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);  /* a1 b1 c1 d1 | a5 .. */
        v[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        v[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        u[j] = _mm256_permute2f128_ps(v[j], v[j + 4], 0x20);
        u[j + 4] = _mm256_permute2f128_ps(v[j], v[j + 4], 0x31);
    }
}

static inline void transpose_8x8(const float *src, ptrdiff_t lds, float *dst, ptrdiff_t ldd)
{
    __m256 r[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lds);
    transpose_regs(r, u);
    for (int j = 0; j < 8; j++) _mm256_storeu_ps(dst + j * ldd, u[j]);
}

/* lanes [0, n) set, 0 <= n <= 8 */
static inline __m256i lane_mask(ptrdiff_t n)
{
    static const int32_t ones_then_zeros[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(ones_then_zeros + 8 - n));
}

/* an nr x nc edge block, 1 <= nr, nc <= 8: masked lanes are neither read nor written */
static inline void transpose_edge(ptrdiff_t nr, ptrdiff_t nc, const float *src, ptrdiff_t lds,
                                  float *dst, ptrdiff_t ldd)
{
    __m256 r[8], u[8];
    __m256i read = lane_mask(nc), write = lane_mask(nr);
    for (ptrdiff_t i = 0; i < 8; i++)
        r[i] = i < nr ? _mm256_maskload_ps(src + i * lds, read) : _mm256_setzero_ps();
    transpose_regs(r, u);
    for (ptrdiff_t j = 0; j < nc; j++) _mm256_maskstore_ps(dst + j * ldd, write, u[j]);
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
        if (rows8 < rows)
            for (ptrdiff_t j = j0; j < j1; j += 8)
                transpose_edge(rows - rows8, 8, src + rows8 * lds + j, lds, dst + j * ldd + rows8, ldd);
    }
    if (cols8 < cols)
        for (ptrdiff_t i = 0; i < rows; i += 8)
            transpose_edge(rows - i < 8 ? rows - i : 8, cols - cols8, src + i * lds + cols8, lds,
                           dst + cols8 * ldd + i, ldd);
}
