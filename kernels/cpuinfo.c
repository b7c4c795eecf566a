/* The host's cache hierarchy, detected once: Linux sysfs (cpu0/cache/index*), else cpuid
 * (x86: leaf 0x8000001D on AMD / Hygon, leaf 4 elsewhere), else CTR_EL0 for the line size
 * (aarch64: the sizes live in EL1-only registers), and a fallback for whatever is left.
 * The GEMM blocking model (gemm-blocking.c) reads it; Python shows it (_core.cache_info). */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "im2row_kernels.h"

#if (defined(__x86_64__) || defined(_M_X64) || defined(__i386__)) && defined(__GNUC__)
#include <cpuid.h>
#define IM2ROW_HAVE_CPUID 1
#endif

static void fallback(im2row_cache_info *c)
{
    c->l1d_bytes = 32 * 1024;
    c->l1d_ways = 8;
    c->l2_bytes = 512 * 1024;
    c->l2_ways = 8;
    c->l3_bytes = 8 * 1024 * 1024;
    c->l3_ways = 16;
    c->l3_sharing = 1;
    c->line_bytes = 64;
    const long page = sysconf(_SC_PAGESIZE);
    c->page_bytes = page > 0 ? (ptrdiff_t)page : 4096;
    c->source = "fallback";
}

/* ---- sysfs ---- */
static int read_line(const char *dir, const char *name, char *buf, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    const int ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    if (!ok) return -1;
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

static ptrdiff_t read_number(const char *dir, const char *name)
{
    char buf[64];
    if (read_line(dir, name, buf, sizeof buf) != 0) return 0;
    char *end;
    const long long v = strtoll(buf, &end, 10);
    if (end == buf || v < 0) return 0;
    switch (*end) { /* "size" reads like 32K or 1M */
    case 'K': case 'k': return (ptrdiff_t)v * 1024;
    case 'M': case 'm': return (ptrdiff_t)v * 1024 * 1024;
    case 'G': case 'g': return (ptrdiff_t)v * 1024 * 1024 * 1024;
    default: return (ptrdiff_t)v;
    }
}

/* "0-3,8,10-11" -> 7 */
static ptrdiff_t count_cpu_list(const char *s)
{
    ptrdiff_t count = 0;
    while (*s) {
        char *end;
        const long a = strtol(s, &end, 10);
        if (end == s) break;
        long b = a;
        s = end;
        if (*s == '-') {
            b = strtol(s + 1, &end, 10);
            s = end;
        }
        if (b >= a) count += b - a + 1;
        if (*s == ',') s++;
        else break;
    }
    return count;
}

static int from_sysfs(im2row_cache_info *c)
{
    int found = 0;
    for (int i = 0; i < 16; i++) {
        char dir[128], type[32], list[256];
        snprintf(dir, sizeof dir, "/sys/devices/system/cpu/cpu0/cache/index%d", i);
        if (read_line(dir, "type", type, sizeof type) != 0) {
            if (i == 0) return -1;
            break;
        }
        if (strcmp(type, "Instruction") == 0) continue;
        const ptrdiff_t level = read_number(dir, "level");
        const ptrdiff_t size = read_number(dir, "size");
        const ptrdiff_t ways = read_number(dir, "ways_of_associativity");
        const ptrdiff_t line = read_number(dir, "coherency_line_size");
        if (size <= 0) continue;
        if (line > 0) c->line_bytes = line;
        if (level == 1) {
            c->l1d_bytes = size;
            if (ways > 0) c->l1d_ways = ways;
        } else if (level == 2) {
            c->l2_bytes = size;
            if (ways > 0) c->l2_ways = ways;
        } else if (level == 3) {
            c->l3_bytes = size;
            if (ways > 0) c->l3_ways = ways;
            if (read_line(dir, "shared_cpu_list", list, sizeof list) == 0) {
                const ptrdiff_t n = count_cpu_list(list);
                if (n > 0) c->l3_sharing = n;
            }
        } else {
            continue;
        }
        found |= 1 << level;
    }
    if (!(found & 2)) return -1; /* no L1 data cache listed: not a usable answer */
    if (!(found & 8)) c->l3_bytes = 0;
    c->source = "sysfs";
    return 0;
}

/* ---- cpuid (deterministic cache parameters; AMD's leaf has Intel's leaf-4 layout) ---- */
static int from_cpuid(im2row_cache_info *c)
{
#ifdef IM2ROW_HAVE_CPUID
    unsigned eax, ebx, ecx, edx, leaf = 4;
    if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return -1;
    const unsigned max_leaf = eax;
    char vendor[13];
    memcpy(vendor, &ebx, 4);
    memcpy(vendor + 4, &edx, 4);
    memcpy(vendor + 8, &ecx, 4);
    vendor[12] = '\0';
    if (strcmp(vendor, "AuthenticAMD") == 0 || strcmp(vendor, "HygonGenuine") == 0) {
        if (!__get_cpuid(0x80000000u, &eax, &ebx, &ecx, &edx) || eax < 0x8000001Du) return -1;
        /* topology extensions (CPUID Fn8000_0001 ECX bit 22) say whether the leaf is valid */
        if (!__get_cpuid(0x80000001u, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 22))) return -1;
        leaf = 0x8000001Du;
    } else if (max_leaf < 4) {
        return -1;
    }
    int found = 0;
    for (unsigned sub = 0; sub < 16; sub++) {
        __cpuid_count(leaf, sub, eax, ebx, ecx, edx);
        const unsigned type = eax & 31u; /* 0 none (end), 1 data, 2 instruction, 3 unified */
        if (type == 0) break;
        if (type == 2) continue;
        const unsigned level = (eax >> 5) & 7u;
        const ptrdiff_t ways = (ptrdiff_t)((ebx >> 22) & 1023u) + 1;
        const ptrdiff_t parts = (ptrdiff_t)((ebx >> 12) & 1023u) + 1;
        const ptrdiff_t line = (ptrdiff_t)(ebx & 4095u) + 1;
        const ptrdiff_t sets = (ptrdiff_t)ecx + 1;
        const ptrdiff_t size = ways * parts * line * sets;
        c->line_bytes = line;
        if (level == 1) {
            c->l1d_bytes = size;
            c->l1d_ways = ways;
        } else if (level == 2) {
            c->l2_bytes = size;
            c->l2_ways = ways;
        } else if (level == 3) {
            c->l3_bytes = size;
            c->l3_ways = ways;
            c->l3_sharing = (ptrdiff_t)((eax >> 14) & 4095u) + 1;
        } else {
            continue;
        }
        found |= 1 << level;
    }
    if (!(found & 2)) return -1;
    if (!(found & 8)) c->l3_bytes = 0;
    c->source = "cpuid";
    return 0;
#else
    (void)c;
    return -1;
#endif
}

/* ---- aarch64: CTR_EL0 (readable from EL0 on Linux) holds the smallest D-cache line ---- */
static int from_ctr_el0(im2row_cache_info *c)
{
#if defined(__aarch64__) && defined(__GNUC__)
    unsigned long ctr;
    __asm__ volatile("mrs %0, ctr_el0" : "=r"(ctr));
    c->line_bytes = (ptrdiff_t)4 << ((ctr >> 16) & 15u); /* DminLine: log2 of words */
    c->source = "ctr_el0";
    return 0;
#else
    (void)c;
    return -1;
#endif
}

int im2row_cache_info_from(const char *source, im2row_cache_info *out)
{
    im2row_cache_info c;
    fallback(&c);
    int rc = -1;
    if (strcmp(source, "sysfs") == 0) rc = from_sysfs(&c);
    else if (strcmp(source, "cpuid") == 0) rc = from_cpuid(&c);
    else if (strcmp(source, "ctr_el0") == 0) rc = from_ctr_el0(&c);
    else if (strcmp(source, "fallback") == 0) rc = 0;
    if (rc == 0) *out = c;
    return rc;
}

/* Detected once.  Threads racing the first call each detect into their own copy (the same
 * answer); one publishes it. */
static im2row_cache_info detected;
static int state; /* 0 none, 1 being published, 2 ready */

void im2row_cache_info_get(im2row_cache_info *out)
{
    if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) == 2) {
        *out = detected;
        return;
    }
    im2row_cache_info c;
    if (im2row_cache_info_from("sysfs", &c) != 0 && im2row_cache_info_from("cpuid", &c) != 0 &&
        im2row_cache_info_from("ctr_el0", &c) != 0)
        im2row_cache_info_from("fallback", &c);
    int expected = 0;
    if (__atomic_compare_exchange_n(&state, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        detected = c;
        __atomic_store_n(&state, 2, __ATOMIC_RELEASE);
    }
    *out = c;
}
