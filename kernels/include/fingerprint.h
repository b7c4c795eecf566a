/* A content fingerprint of a byte range: how conv2d() tells that a caller's weights still hold
 * the values a cached layer was built from, reading them once (a memcmp against the layer's
 * snapshot would read twice as much).
 *
 * Eight lanes of 32-bit words, each with a Fletcher pair in 64-bit sums (s1 += word, s2 += s1).
 * Any change to one word changes its lane's s1 (word differences are < 2^32, never 0 mod 2^64);
 * changes to two words of a lane that cancel in s1 still move s2 by d * distance, never 0 mod
 * 2^64.  A miss needs three or more words edited in bit patterns that cancel in both sums of
 * every lane they touch.  The lanes are independent, so the compiler vectorises the loop. */
#ifndef IM2ROW_FINGERPRINT_H
#define IM2ROW_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define IM2ROW_FINGERPRINT_WORDS 17   /* 8 s1, 8 s2, the length */

/* Two 64-bit lanes per vector: the even and the odd 32-bit word of each lane, widened by a
 * mask and a shift (portable GCC/Clang vector extensions: SSE2 or NEON, no ISA flags). */
typedef uint64_t im2row_u64x2 __attribute__((vector_size(16)));

static inline void im2row_fingerprint(const void *data, size_t nbytes,
                                      uint64_t out[IM2ROW_FINGERPRINT_WORDS])
{
    const unsigned char *bytes = (const unsigned char *)data;
    const im2row_u64x2 low32 = {0xffffffffu, 0xffffffffu};
    im2row_u64x2 s1[4] = {{0}}, s2[4] = {{0}};
    size_t i = 0;
    for (; i + 32 <= nbytes; i += 32) {
        im2row_u64x2 v[2];
        memcpy(v, bytes + i, sizeof v);     /* no alignment assumed */
        for (int h = 0; h < 2; h++) {
            s1[2 * h] += v[h] & low32;
            s2[2 * h] += s1[2 * h];
            s1[2 * h + 1] += v[h] >> 32;
            s2[2 * h + 1] += s1[2 * h + 1];
        }
    }
    uint64_t t1[8], t2[8];
    memcpy(t1, s1, sizeof t1);
    memcpy(t2, s2, sizeof t2);
    for (int l = 0; i < nbytes; i++, l = (l + 1) & 7) {     /* the last < 32 bytes */
        t1[l] += (uint64_t)bytes[i] + 1;
        t2[l] += t1[l];
    }
    for (int l = 0; l < 8; l++) {
        out[l] = t1[l];
        out[8 + l] = t2[l];
    }
    out[16] = (uint64_t)nbytes;
}

#endif
