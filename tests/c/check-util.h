/* Helpers shared by the standalone kernel checkers (data_kernels_check.c,
 * nhwc_kernels_check.c): a seeded xorshift generator and allocations flush against a
 * PROT_NONE guard page, so a kernel that reads or writes past what its contract allows
 * faults.  Header-only (static); the includer sets g_page = sysconf(_SC_PAGESIZE) first. */
#ifndef IM2ROW_CHECK_UTIL_H
#define IM2ROW_CHECK_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static ptrdiff_t rint_in(ptrdiff_t lo, ptrdiff_t hi) /* inclusive */
{
    return lo + (ptrdiff_t)(rnd() % (uint64_t)(hi - lo + 1));
}
static float rfloat(void) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2.0 - 1.0); }

/* Guarded allocation: `n` floats placed flush against a PROT_NONE page, after it
 * (at_end = 0) or before it (at_end = 1). */
typedef struct { void *base; size_t len; float *p; } guarded;
static size_t g_page;

static guarded galloc(size_t n, int at_end)
{
    size_t bytes = n * sizeof(float);
    size_t data_pages = (bytes + g_page - 1) / g_page;
    if (data_pages == 0) data_pages = 1;
    guarded g;
    g.len = (data_pages + 2) * g_page;
    g.base = mmap(NULL, g.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g.base == MAP_FAILED) { perror("mmap"); exit(2); }
    char *b = (char *)g.base;
    mprotect(b, g_page, PROT_NONE);
    mprotect(b + (data_pages + 1) * g_page, g_page, PROT_NONE);
    if (at_end)
        g.p = (float *)(b + (data_pages + 1) * g_page - bytes);
    else
        g.p = (float *)(b + g_page);
    return g;
}
static void gfree(guarded g) { munmap(g.base, g.len); }

#endif
