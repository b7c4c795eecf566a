/* Cache blocking of the f32-gemm-packed kernels, from the host's caches and the ISA's register
 * tile, in the manner of Low et al. 2016 ("Analytical modeling is enough for high-performance
 * BLIS").  Nothing here is fitted to one CPU: change the caches and the blocking follows.
 *
 * Roles in our loops (gemm-packed-driver.inc): a strip of B (kc x nr, copied contiguous) is
 * read by every tile of an A block, so it must stay in L1 while the tiles' A micro-panels
 * (kc x mr: a k step of a panel is mr floats, whole lines) stream through from L2; the A block
 * (mc x kc) is read once per strip, so it stays in L2; the B panel (kc x nc) that the strips
 * are copied from is read once per A block, so it stays in this core's share of L3. */
#include <stddef.h>
#include <stdint.h>

#include "im2row_kernels.h"

enum { FLOAT_BYTES = sizeof(float) };
/* nc when there is no L3 to size it by (or no tile to round to): "all columns". */
#define NC_ALL ((ptrdiff_t)1 << 40)

static ptrdiff_t max_p(ptrdiff_t a, ptrdiff_t b) { return a > b ? a : b; }
static ptrdiff_t min_p(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }
static ptrdiff_t round_down(ptrdiff_t x, ptrdiff_t q) { return x / q * q; }
static ptrdiff_t round_up(ptrdiff_t x, ptrdiff_t q) { return (x + q - 1) / q * q; }

void im2row_gemm_blocking_model(const im2row_gemm_tile *tile, const im2row_cache_info *caches,
                                im2row_gemm_blocking *out)
{
    if (tile->nr <= 0) { /* a tile that packs nothing (the scalar oracle): no blocking */
        out->kc = NC_ALL;
        out->kc_m = NC_ALL;
        out->mc = NC_ALL;
        out->nc = NC_ALL;
        out->copy_b = -1;
        return;
    }
    /* L1: of W ways, the streamed A micro-panels get their share by the ratio of floats
     * per k step (mr of A against nr of B), at least one way; one way is left for C; the B
     * strip takes the rest, which fixes kc. */
    const ptrdiff_t w1 = max_p(caches->l1d_ways, 2);
    const ptrdiff_t way1 = caches->l1d_bytes / w1;
    const ptrdiff_t ways_a = max_p(1, (w1 - 1) * tile->mr / (tile->mr + tile->nr));
    const ptrdiff_t ways_b = max_p(1, w1 - 1 - ways_a);
    const ptrdiff_t kc = max_p(8, round_down(ways_b * way1 / (tile->nr * FLOAT_BYTES), 8));
    /* The m-vectorised tile keeps its whole A micro-panel in registers per k step and stores C
     * transposed, element by element, once per slice: its narrow strip takes every way but
     * one for the streamed A and one for C, so slices are long and C is rarely stored. */
    const ptrdiff_t kc_m = max_p(8, round_down(max_p(1, w1 - 2) * way1 / (max_p(tile->nr_m, 1) * FLOAT_BYTES), 8));

    /* L2: the A block takes all ways but two (the B strip's copy and the B rows being copied
     * from also pass through L2, and C tiles). */
    const ptrdiff_t w2 = max_p(caches->l2_ways, 4);
    const ptrdiff_t way2 = caches->l2_bytes / w2;
    const ptrdiff_t mc = max_p(tile->mr, round_down((w2 - 2) * way2 / (kc * FLOAT_BYTES), tile->mr));

    /* L3 (shared): half of this core's share holds the B panel; the rest is for A, C and the
     * other cores' traffic.  No L3: the panel is all of n. */
    ptrdiff_t nc = NC_ALL;
    if (caches->l3_bytes > 0) {
        const ptrdiff_t share = caches->l3_bytes / max_p(caches->l3_sharing, 1);
        nc = max_p(tile->nr, round_down(share / 2 / (kc * FLOAT_BYTES), tile->nr));
    }
    out->kc = kc;
    out->kc_m = kc_m;
    out->mc = mc;
    out->nc = nc;
    out->copy_b = 0;
}

/* The model's blocking for this host, computed once per tile pointer would need a table;
 * the model is a handful of divisions, cheaper than a GEMM's first tile. */
static void host_model(const im2row_gemm_tile *tile, im2row_gemm_blocking *out)
{
    im2row_cache_info caches;
    im2row_cache_info_get(&caches);
    im2row_gemm_blocking_model(tile, &caches, out);
}

void im2row_gemm_blocking_resolve(const im2row_gemm_tile *tile, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                  const im2row_gemm_blocking *request, im2row_gemm_blocking *out)
{
    im2row_gemm_blocking model;
    host_model(tile, &model);
    ptrdiff_t kc = request && request->kc > 0 ? request->kc : model.kc;
    ptrdiff_t kc_m = request && request->kc > 0 ? request->kc : model.kc_m;
    if (request && request->kc_m > 0) kc_m = request->kc_m;
    ptrdiff_t mc = request && request->mc > 0 ? request->mc : model.mc;
    ptrdiff_t nc = request && request->nc > 0 ? request->nc : model.nc;
    const ptrdiff_t mr = max_p(tile->mr, 1), nr = max_p(tile->nr, 1);

    /* Equal slices and blocks: no short last one paying a full round trip for little work. */
    kc = min_p(max_p(kc, 1), k);
    const ptrdiff_t slices = (k + kc - 1) / kc;
    out->kc = (k + slices - 1) / slices;
    kc_m = min_p(max_p(kc_m, 1), k);
    const ptrdiff_t slices_m = (k + kc_m - 1) / kc_m;
    out->kc_m = (k + slices_m - 1) / slices_m;

    mc = round_up(min_p(max_p(mc, 1), m), mr);
    const ptrdiff_t blocks = (m + mc - 1) / mc;
    out->mc = round_up((m + blocks - 1) / blocks, mr);

    /* nc stays a multiple of the widest strip so that every panel but the last is whole strips. */
    out->nc = nc >= n ? n : max_p(nr, round_down(nc, nr));
    out->copy_b = request ? request->copy_b : 0;
}

ptrdiff_t im2row_igemm_nhwc_kslice(ptrdiff_t mr, ptrdiff_t nr)
{
    /* The same L1 split as a packed strip: a slice of the weight panel (kslice x nr) is read
     * by every pixel tile of the call, the tiles' mr input rows stream past it. */
    const im2row_gemm_tile tile = {mr, nr, mr, 0};
    im2row_gemm_blocking model;
    host_model(&tile, &model);
    return model.kc;
}

int im2row_gemm_copy_rule(const im2row_gemm_tile *tile, ptrdiff_t m, ptrdiff_t n,
                          const im2row_gemm_blocking *request)
{
    if (tile->nr <= 0) return 0;
    const int copy = request ? request->copy_b : 0;
    if (copy != 0) return copy > 0 ? 2 : 0;
    /* Rows of B at least n floats apart: from a page apart on, each k step of a strip is its
     * own page and prefetch stream (TLB misses, no streaming), whatever reads it. */
    im2row_cache_info caches;
    im2row_cache_info_get(&caches);
    if (n * FLOAT_BYTES >= caches.page_bytes) return 2;
    /* Closer rows: a copy pays once enough tiles read the strip (the narrow m-vectorised
     * strips are read by fewer, taller tiles, and stay in place).  A lone strip is never
     * copied: its tiles take all of k in one slice, too deep for L1; from a third of a strip
     * past one (a whole vector more) on, there are two. */
    const int strips = n >= tile->nr + tile->nr / 3;
    return strips && m >= IM2ROW_GEMM_COPY_TILES * max_p(tile->rows, 1) ? 1 : 0;
}

ptrdiff_t im2row_gemm_work_floats(const im2row_gemm_tile *tile, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                  const im2row_gemm_blocking *request)
{
    if (tile->nr <= 0 || k < 1 || im2row_gemm_copy_rule(tile, m, n, request) == 0) return 0;
    im2row_gemm_blocking b;
    im2row_gemm_blocking_resolve(tile, 1, n, k, request, &b);
    /* kc + kc_m row pointers (two floats each on 64-bit), the larger of a kc x nr and a
     * kc_m x nr_m strip, slack for aligning the pointers and the strip */
    const ptrdiff_t pointer_floats = (ptrdiff_t)((sizeof(float *) + FLOAT_BYTES - 1) / FLOAT_BYTES);
    const ptrdiff_t strip = max_p(b.kc * tile->nr, b.kc_m * tile->nr_m);
    return (b.kc + b.kc_m) * pointer_floats + strip + 64 / FLOAT_BYTES + pointer_floats;
}
