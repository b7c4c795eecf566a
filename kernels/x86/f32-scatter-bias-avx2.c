/* f32-scatter-bias, AVX2 variant.
 * Contract (im2row_kernels.h): dst[k*dst_stride] = src[k] + bias, k in [0, n),
 * dst_stride >= 1.  src must not overlap the written dst elements (the contiguous case
 * finishes with an overlapping vector that rereads src).
 * Contiguous dst: vector add and store, the tail as one vector moved back to end at n.
 * Strided dst: the add is vectorised and the 8 lanes stored one by one (AVX2 has no
 * scatter; extracting lanes keeps it at one store per element). */
#if defined(__x86_64__) || defined(_M_X64)
#include <assert.h>
#include <immintrin.h>

#include "im2row_kernels.h"

void im2row_scatter_bias__avx2(float *dst, ptrdiff_t dst_stride, const float *src,
                               ptrdiff_t n, float bias)
{
    assert(dst_stride >= 1);
    assert(n >= 0);
    assert(n == 0 || (dst != NULL && src != NULL));
    const __m256 vb = _mm256_set1_ps(bias);
    if (dst_stride == 1) {
        if (n >= 8) {
            ptrdiff_t k = 0;
            for (; k + 8 < n; k += 8)
                _mm256_storeu_ps(dst + k, _mm256_add_ps(_mm256_loadu_ps(src + k), vb));
            _mm256_storeu_ps(dst + n - 8, _mm256_add_ps(_mm256_loadu_ps(src + n - 8), vb));
        } else if (n >= 4) {
            __m128 b4 = _mm256_castps256_ps128(vb);
            __m128 a = _mm_add_ps(_mm_loadu_ps(src), b4), c = _mm_add_ps(_mm_loadu_ps(src + n - 4), b4);
            _mm_storeu_ps(dst, a);
            _mm_storeu_ps(dst + n - 4, c);
        } else {
            for (ptrdiff_t k = 0; k < n; k++)
                dst[k] = src[k] + bias;
        }
        return;
    }
    ptrdiff_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 v = _mm256_add_ps(_mm256_loadu_ps(src + k), vb);
        __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
        float *d = dst + k * dst_stride;
        _mm_store_ss(d, lo);
        _mm_store_ss(d + dst_stride, _mm_movehdup_ps(lo));
        _mm_store_ss(d + 2 * dst_stride, _mm_movehl_ps(lo, lo));
        _mm_store_ss(d + 3 * dst_stride, _mm_shuffle_ps(lo, lo, 3));
        d += 4 * dst_stride;
        _mm_store_ss(d, hi);
        _mm_store_ss(d + dst_stride, _mm_movehdup_ps(hi));
        _mm_store_ss(d + 2 * dst_stride, _mm_movehl_ps(hi, hi));
        _mm_store_ss(d + 3 * dst_stride, _mm_shuffle_ps(hi, hi, 3));
    }
    for (; k < n; k++)
        dst[k * dst_stride] = src[k] + bias;
}
#endif
