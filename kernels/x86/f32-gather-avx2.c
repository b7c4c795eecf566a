/* f32-gather, AVX2 variant.
 * Contract (im2row_kernels.h): dst[k] = src[start + k*stride] when the index lies in
 * [0, src_len), else 0, for k in [0, n); stride >= 1; src may be NULL when no index is in
 * range.  The in-range k form one interval [k_lo, k_hi), so a row is zeros | copy | zeros.
 *
 * Rows are short (one per channel, tap and input row), so every piece finishes without a
 * scalar loop: runs of >= 8 end with a vector moved back to overlap the previous one
 * (stores are idempotent), shorter runs use 4/2/1-float pieces.  No masked stores (slow on
 * AMD).  Stride 2 deinterleaves with shuffles, stride 3 with permutes; both load the last
 * vector shifted back so nothing past the last used element is read.  Larger strides use a
 * plain loop: vgatherdps does not beat it on Zen 4. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "im2row_kernels.h"
#include "gather-common.h"

#define AI static inline __attribute__((always_inline))

AI void zero_run(float *d, ptrdiff_t m)
{
    const __m256 z = _mm256_setzero_ps();
    if (m >= 8) {
        ptrdiff_t k = 0;
        for (; k + 8 < m; k += 8)
            _mm256_storeu_ps(d + k, z);
        _mm256_storeu_ps(d + m - 8, z);
    } else if (m >= 4) {
        _mm_storeu_ps(d, _mm256_castps256_ps128(z));
        _mm_storeu_ps(d + m - 4, _mm256_castps256_ps128(z));
    } else {
        for (ptrdiff_t k = 0; k < m; k++)
            d[k] = 0.0f;
    }
}

AI void copy_run(float *d, const float *s, ptrdiff_t m)
{
    if (m >= 8) {
        ptrdiff_t k = 0;
        for (; k + 32 <= m; k += 32) {
            __m256 a = _mm256_loadu_ps(s + k), b = _mm256_loadu_ps(s + k + 8);
            __m256 c = _mm256_loadu_ps(s + k + 16), e = _mm256_loadu_ps(s + k + 24);
            _mm256_storeu_ps(d + k, a);
            _mm256_storeu_ps(d + k + 8, b);
            _mm256_storeu_ps(d + k + 16, c);
            _mm256_storeu_ps(d + k + 24, e);
        }
        for (; k + 8 < m; k += 8)
            _mm256_storeu_ps(d + k, _mm256_loadu_ps(s + k));
        _mm256_storeu_ps(d + m - 8, _mm256_loadu_ps(s + m - 8));
    } else if (m >= 4) {
        __m128 a = _mm_loadu_ps(s), b = _mm_loadu_ps(s + m - 4);
        _mm_storeu_ps(d, a);
        _mm_storeu_ps(d + m - 4, b);
    } else {
        for (ptrdiff_t k = 0; k < m; k++)
            d[k] = s[k];
    }
}

/* d[k] = s[2k], k < m.  8 outputs come from s[2k .. 2k+14]: a = s[2k..], b = s[2k+7..];
 * even lanes of a give s[2k+0,2,4,6], odd lanes of b give s[2k+8,10,12,14]. */
AI __m256 even8(const float *s)
{
    __m256 a = _mm256_loadu_ps(s), b = _mm256_loadu_ps(s + 7);
    __m256 t = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 2, 0));   /* a0 a2 b1 b3 | a4 a6 b5 b7 */
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

AI void copy_run2(float *d, const float *s, ptrdiff_t m)
{
    if (m >= 8) {
        ptrdiff_t k = 0;
        for (; k + 8 < m; k += 8)
            _mm256_storeu_ps(d + k, even8(s + 2 * k));
        _mm256_storeu_ps(d + m - 8, even8(s + 2 * (m - 8)));
    } else {
        for (ptrdiff_t k = 0; k < m; k++)
            d[k] = s[2 * k];
    }
}

/* d[k] = s[3k]: three loads cover s[3k .. 3k+21] (the third shifted back to end there),
 * each permuted so its wanted lanes land in place, then blended. */
AI __m256 third8(const float *s, __m256i pa, __m256i pb, __m256i pc)
{
    __m256 a = _mm256_permutevar8x32_ps(_mm256_loadu_ps(s), pa);       /* s0 s3 s6 */
    __m256 b = _mm256_permutevar8x32_ps(_mm256_loadu_ps(s + 8), pb);   /* s9 s12 s15 */
    __m256 c = _mm256_permutevar8x32_ps(_mm256_loadu_ps(s + 14), pc);  /* s18 s21 */
    return _mm256_blend_ps(_mm256_blend_ps(a, b, 0x38), c, 0xC0);
}

AI void copy_run3(float *d, const float *s, ptrdiff_t m)
{
    if (m >= 8) {
        const __m256i pa = _mm256_setr_epi32(0, 3, 6, 0, 0, 0, 0, 0);
        const __m256i pb = _mm256_setr_epi32(0, 0, 0, 1, 4, 7, 0, 0);
        const __m256i pc = _mm256_setr_epi32(0, 0, 0, 0, 0, 0, 4, 7);
        ptrdiff_t k = 0;
        for (; k + 8 < m; k += 8)
            _mm256_storeu_ps(d + k, third8(s + 3 * k, pa, pb, pc));
        _mm256_storeu_ps(d + m - 8, third8(s + 3 * (m - 8), pa, pb, pc));
    } else {
        for (ptrdiff_t k = 0; k < m; k++)
            d[k] = s[3 * k];
    }
}

void im2row_gather__avx2(float *dst, const float *src, ptrdiff_t src_len,
                         ptrdiff_t start, ptrdiff_t stride, ptrdiff_t n)
{
    ptrdiff_t k_lo, k_hi;
    if (!gather_interval(dst, src, src_len, start, stride, n, &k_lo, &k_hi))
        return;

    if (k_lo)
        zero_run(dst, k_lo);
    const ptrdiff_t m = k_hi - k_lo;
    if (m) {
        float *d = dst + k_lo;
        const float *s = src + start + k_lo * stride;
        if (stride == 1) {
            copy_run(d, s, m);
        } else if (stride == 2) {
            copy_run2(d, s, m);
        } else if (stride == 3) {
            copy_run3(d, s, m);
        } else {
            ptrdiff_t k = 0;
            for (; k + 4 <= m; k += 4) {
                float a = s[0], b = s[stride], c = s[2 * stride], e = s[3 * stride];
                d[k] = a; d[k + 1] = b; d[k + 2] = c; d[k + 3] = e;
                s += 4 * stride;
            }
            for (; k < m; k++, s += stride)
                d[k] = *s;
        }
    }
    if (k_hi < n)
        zero_run(dst + k_hi, n - k_hi);
}
#endif
