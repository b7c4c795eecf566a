/* im2row kernel contracts.
 *
 * Every kernel family has one scalar implementation (kernels/scalar/) and SIMD variants
 * (kernels/x86/<family>-avx2.c, <family>-avx512.c, kernels/arm/<family>-neon.c).  The dispatch table in
 * kernels/dispatch.c picks one variant per family at run time; nothing else calls a
 * variant directly, so the Cython core, the tests and the benchmarks all go through
 * `im2row_kernels_get()`.
 *
 * All sizes are in elements (floats), all strides in elements.  Kernels never allocate.
 */
#ifndef IM2ROW_KERNELS_H
#define IM2ROW_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- f32-gather: the im2row buffer update -------------------------------------------
 * dst[k] = src[start + k*stride]  when 0 <= start + k*stride < src_len, else 0,
 * for k in [0, n).  stride >= 1.  src may be NULL when no index is in range
 * (a padding row): then dst is zero-filled.
 * This one routine fills every im2row buffer row, the classic patch matrix and the
 * strided 1x1 input, so its SIMD variants matter (stride 1 and 2 are the common cases). */
typedef void (*im2row_gather_fn)(float *dst, const float *src, ptrdiff_t src_len,
                                 ptrdiff_t start, ptrdiff_t stride, ptrdiff_t n);

/* ---- f32-scatter-bias: the epilogue of a column block --------------------------------
 * dst[k*dst_stride] = src[k] + bias, k in [0, n).  dst_stride >= 1. */
typedef void (*im2row_scatter_fn)(float *dst, ptrdiff_t dst_stride, const float *src,
                                  ptrdiff_t n, float bias);

/* ---- f32-dwconv: depthwise (one input plane -> one output plane) direct convolution ---
 * in:  `phases` holds the zero-padded input plane split into sw column phases:
 *      phases[p][r][u] = xpad[r][u*sw + p], p in [0,sw), r in [0,hp), u in [0,phase_w)
 *      (phase p starts at phases + p*hp*phase_w).  Padding is already applied, so the
 *      kernel reads only in-range memory.
 *      out[oh][ow] = bias + sum_{i<kh, j<kw} w[i*kw + j] * xpad[oh*sh + i*dh][ow*sw + j*dw]
 *      which reads phase (j*dw) % sw at column ow + (j*dw)/sw.
 * out: oh x ow row-major, row stride out_stride.  Requires phase_w >= ow + ((kw-1)*dw)/sw
 *      and hp >= (oh-1)*sh + (kh-1)*dh + 1. */
typedef void (*im2row_dwconv_fn)(float *out, ptrdiff_t out_stride, ptrdiff_t oh, ptrdiff_t ow,
                                 const float *phases, ptrdiff_t hp, ptrdiff_t phase_w,
                                 const float *w, ptrdiff_t kh, ptrdiff_t kw,
                                 ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw,
                                 float bias);

/* ---- f32-dwconv-s2: stride-2 depthwise on the unpadded plane ---------------------------
 * out[y][x] = bias + sum_{i<kh, j<kw} w[i*kw + j] * in(2y - pad_top + i, 2x - pad_left + j),
 *     in(r, c) = plane[r*width + c] inside [0, height) x [0, width), else 0,
 * for y < oh, x < ow; out row stride out_stride.  The stride-2 phase split that f32-dwconv
 * needs copied beforehand happens in registers (even and odd columns of the loaded row), so
 * nothing is copied.  Requires kh >= 1, 1 <= kw <= 7, pads >= 0; reads no float outside the
 * plane and writes none outside the oh x ow view.  Never allocates. */
typedef void (*im2row_dwconv_s2_fn)(float *out, ptrdiff_t out_stride, ptrdiff_t oh, ptrdiff_t ow,
                                    const float *plane, ptrdiff_t height, ptrdiff_t width,
                                    ptrdiff_t pad_top, ptrdiff_t pad_left, const float *w,
                                    ptrdiff_t kh, ptrdiff_t kw, float bias);
#define IM2ROW_DWCONV_S2_MAX_KW 7

/* ---- cache hierarchy, detected once (kernels/cpuinfo.c) ------------------------------
 * Per core: L1 data, L2 and L3 (bytes, ways), line size, and how many logical CPUs share one
 * L3.  A field the source does not give keeps its fallback (32 KB/8 L1D, 512 KB/8 L2,
 * 8 MB/16 L3, 64-byte lines). */
typedef struct im2row_cache_info {
    ptrdiff_t l1d_bytes, l1d_ways;
    ptrdiff_t l2_bytes, l2_ways;
    ptrdiff_t l3_bytes, l3_ways;      /* l3_bytes == 0: the CPU has no L3 */
    ptrdiff_t l3_sharing;             /* logical CPUs sharing one L3 (>= 1) */
    ptrdiff_t line_bytes;
    ptrdiff_t page_bytes;             /* virtual memory page (sysconf), 4096 if unknown */
    const char *source;               /* "sysfs", "cpuid", "ctr_el0" (line size only), "fallback" */
} im2row_cache_info;

/* The host's caches (first call detects: sysfs, else cpuid / CTR_EL0, else the fallback). */
void im2row_cache_info_get(im2row_cache_info *out);
/* One source only ("sysfs", "cpuid", "fallback"): 0 and *out filled if it answered, else -1. */
int im2row_cache_info_from(const char *source, im2row_cache_info *out);

/* ---- f32-gemm-packed: C (m x n) (+)= A_packed (m x k) @ B (k x n) ----------------------
 * A is the weight matrix, packed once by `pack_a` into panels of `mr` rows:
 *   packed[panel][kk][r] = A[panel*mr + r][kk]  (zero for rows past m).
 * B is reached through row pointers: row kk is b_rows[kk][0 .. n).  The rows are views
 * of the im2row buffer, so one GEMM can take every kernel row's fixed-offset view, in the
 * ring's current slot order, without copies or rotated weights.
 * C element (i, j) is c[i*ldc + j*cs]: cs > 1 lets a column class (output columns t, t+G, ...)
 * land in the output directly.  accumulate=0 overwrites C, 1 adds to it.  bias (m floats, or
 * NULL) is added to every element of its row: it starts the accumulators, so a convolution's
 * bias costs no pass of its own over C.
 *
 * Blocking (BLIS's loops around one register tile): for each panel of nc columns, each k
 * slice of kc, each block of mc rows of A (mc x kc packed A stays in L2), each strip of B
 * columns the tile is wide (kc x strip, copied into `work` so that it streams from L1 instead
 * of through kc row pointers), every tile of rows.  `blocking` NULL or a field 0 = the
 * analytic model's value for this host (im2row_gemm_blocking_resolve).
 * `work`: NULL reads B in place; else at least im2row_gemm_work_floats(tile, n, k, blocking)
 * floats, private to this call (no alignment needed); when that is 0 the kernel copies
 * nothing and work may be NULL.  Kernels never allocate. */
typedef struct im2row_gemm_blocking {
    ptrdiff_t kc;   /* depth of one k slice of the n-vectorised tiles (slices are equal:
                       kc <= the value asked for); asking for kc sets kc_m too */
    ptrdiff_t kc_m; /* the same for the m-vectorised tiles, whose B strips are narrow */
    ptrdiff_t mc;   /* rows of A per block, a multiple of the tile's mr */
    ptrdiff_t nc;   /* columns of B per panel, a multiple of the tile's nr */
    int copy_b;     /* copy B strips into work: 0 = the rule of im2row_gemm_copy_rule, 1 =
                       always, -1 = never */
} im2row_gemm_blocking;

/* What the model needs to know of one ISA's register tiles. */
typedef struct im2row_gemm_tile {
    ptrdiff_t mr;       /* panel height of packed A (a k step of one panel is mr floats) */
    ptrdiff_t nr;       /* widest B strip a tile streams (columns); 0: the kernel packs nothing */
    ptrdiff_t rows;     /* rows of the n-vectorised tile that streams that strip */
    ptrdiff_t nr_m;     /* widest strip of the m-vectorised tile */
} im2row_gemm_tile;

typedef void (*im2row_gemm_fn)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                               const float *a_packed, const float *const *b_rows,
                               float *c, ptrdiff_t ldc, ptrdiff_t cs, int accumulate,
                               const float *bias, const im2row_gemm_blocking *blocking, float *work);

/* The model (kernels/gemm-blocking.c, after Low et al. 2016), shape-free: kc so the kc x nr B
 * strip fills the L1 ways the streamed A micro-panels and C leave (kc_m likewise for the
 * narrow m-tile strips); mc so the mc x kc A block fills L2 but two ways; nc so the kc x nc B
 * panel fills half of this core's L3 share.  A panel of one strip reuses no A block, so the
 * kernels do not slice k there. */
void im2row_gemm_blocking_model(const im2row_gemm_tile *tile, const im2row_cache_info *caches,
                                im2row_gemm_blocking *out);
/* The blocking a kernel runs for this shape: `request` fields > 0 (request may be NULL), else
 * the model's for this host; then fitted to the shape: kc in [1, k] in equal slices, mc a
 * multiple of mr in [mr, m rounded up] in equal blocks, nc a multiple of nr (or n). */
void im2row_gemm_blocking_resolve(const im2row_gemm_tile *tile, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                  const im2row_gemm_blocking *request, im2row_gemm_blocking *out);
/* Which B strips an m x n GEMM copies into `work` before its tiles stream them: 0 none (B
 * read in place), 1 those of the n-vectorised tiles, 2 all.  copy_b > 0: all, < 0: none;
 * 0: all when B rows (n floats or more apart) fall on separate pages, else the n-vectorised
 * strips when at least IM2ROW_GEMM_COPY_TILES tiles of the A block read each of them. */
int im2row_gemm_copy_rule(const im2row_gemm_tile *tile, ptrdiff_t m, ptrdiff_t n,
                          const im2row_gemm_blocking *request);
/* Tiles sharing one strip from which copying it pays: a copy costs about one pass over the
 * strip from L2, and reading the strip in place (kc rows from scattered lines and pages) costs
 * each tile a few % more than a contiguous strip; measured on AVX-512 and AVX2 (benchmarks/). */
#define IM2ROW_GEMM_COPY_TILES 16
/* Floats of `work` an m x n x k GEMM needs with this blocking request: 0 where it copies no
 * B strips (tiles that pack nothing, or im2row_gemm_copy_rule says none).  A call with a
 * smaller m may copy less, never more. */
ptrdiff_t im2row_gemm_work_floats(const im2row_gemm_tile *tile, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                  const im2row_gemm_blocking *request);

/* ---- f32-igemm-nhwc: channels-last convolution as an indirect GEMM ------------------------
 * out[p*ldc + j] = bias[j] + sum_{t in taps, ch<kc} (a[p*ks + t] + a_offset)[ch] * W[t*kc + ch][j]
 * for output pixels p in [0, m) and output channels j in [0, n), over a box of the ks taps:
 * tap_rows runs of ntaps taps, row_step apart, the first at tap0 (t = tap0 + r*row_step + q,
 * r < tap_rows, q < ntaps).  (0, ks, 1: all of them.)  A caller skips the taps that lie in the
 * padding for every pixel: whole kernel rows (one run) or, for pixels at a row's ends, the
 * kernel columns outside the input (one run per kernel row).
 * a:  m*ks pointers, pixel-major: one per (output pixel, tap), each to the kc floats of one
 *     input pixel (a tap: kc = the group's channels) or of one padded kernel row (kc = kw*C);
 *     padding taps point at a shared zero vector.  a_offset (floats) is added to every
 *     pointer, so groups share one table (the zero vector must then hold a_offset + kc zeros).
 * w:  packed once by im2row_pack_igemm_nhwc with this variant's nr: per panel of nr columns,
 *     nr bias values, then ks*kc rows of nr weights (zero past column n).
 * Output rows have stride ldc >= n, so a group writes its channel slice of an NHWC row.
 * kslice: k steps per slice of a panel (<= 0: all ks*kc), so that the slice's weights stay in
 * L1 while every pixel tile passes (im2row_igemm_nhwc_kslice); slices are whole taps or a part
 * of one tap's channels, and each after the first adds to what the last one stored in c.
 * Requires m, n, ks, kc, ntaps, tap_rows >= 1, tap0 >= 0, row_step >= ntaps where tap_rows > 1,
 * tap0 + (tap_rows - 1)*row_step + ntaps <= ks.  Never allocates; reads only the pointers of
 * the box's taps, no float outside their kc-float vectors and the packed panels; writes nothing
 * outside the m x n view. */
typedef void (*im2row_igemm_nhwc_fn)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t ks, ptrdiff_t kc,
                                     ptrdiff_t kslice, ptrdiff_t tap0, ptrdiff_t ntaps,
                                     ptrdiff_t tap_rows, ptrdiff_t row_step,
                                     const float *const *a, ptrdiff_t a_offset,
                                     const float *w_packed, float *c, ptrdiff_t ldc);

/* ---- f32-dwconv-nhwc: depthwise (channel multiplier 1), channels-last -------------------
 * out[p*out_stride + ch] = w[ch] + sum_{t<ks} in(p, t)[ch] * w[(1 + t)*channels + ch],
 *     in(p, t) = a[p*a_stride + t] + p*a_step,
 * for p in [0, m), ch in [0, channels): vectorised across channels.  Two ways to address:
 * a table (a_stride = ks, a_step = 0: one pointer per (output pixel, tap), as for igemm-nhwc),
 * or a run of output pixels whose windows all move by the same step (a_stride = 0: ks
 * pointers for the first pixel, a_step = sw*C floats), which needs no table at all.  A padding
 * tap is NULL (skipped: no FMA spent on it), and then NULL for every pixel of the call (the
 * caller groups pixels by the taps inside the input), or points at zeros, which must then
 * hold (m-1)*a_step + channels floats.
 * w: a bias row then ks tap rows of `channels` floats.
 * Requires m, channels, ks >= 1, a_stride, a_step >= 0, out_stride >= channels.  Never
 * allocates. */
typedef void (*im2row_dwconv_nhwc_fn)(ptrdiff_t m, ptrdiff_t channels, ptrdiff_t ks,
                                      const float *const *a, ptrdiff_t a_stride,
                                      ptrdiff_t a_step, const float *w, float *out,
                                      ptrdiff_t out_stride);

/* ---- f32-transpose: layout changes between planes and channels-last bands -------------------
 * dst[j*ldd + i] = src[i*lds + j] for i in [0, rows), j in [0, cols); src and dst must not
 * overlap.  Never allocates; touches nothing outside the two strided views; rows or cols <= 0
 * is an empty transpose. */
#define IM2ROW_TRANSPOSE_LINE 16   /* columns per strip: one 64-byte line of source floats */
typedef void (*im2row_transpose_fn)(ptrdiff_t rows, ptrdiff_t cols, const float *src,
                                    ptrdiff_t lds, float *dst, ptrdiff_t ldd);

typedef struct im2row_kernels {
    const char *isa;          /* "scalar", "avx2", "avx512", "neon" */
    im2row_gather_fn gather;
    im2row_scatter_fn scatter_bias;
    im2row_dwconv_fn dwconv;
    im2row_dwconv_s2_fn dwconv_s2;
    im2row_gemm_fn gemm;      /* NULL when this ISA has no packed GEMM */
    ptrdiff_t gemm_mr;        /* panel height expected by `gemm`'s packed A */
    const im2row_gemm_tile *gemm_tile;  /* its tiles, for the blocking model and `work` */
    im2row_igemm_nhwc_fn igemm_nhwc;
    ptrdiff_t igemm_nhwc_mr;  /* output pixels per register tile (the driver's band unit) */
    ptrdiff_t igemm_nhwc_nr;  /* panel width expected by `igemm_nhwc`'s packed weights */
    im2row_dwconv_nhwc_fn dwconv_nhwc;
    im2row_transpose_fn transpose;
} im2row_kernels;

/* CPU features, detected once. */
int im2row_cpu_has_avx2_fma(void);
int im2row_cpu_has_avx512(void);
int im2row_cpu_has_neon(void);

/* The variants compiled into this build and usable on this CPU, best first. */
int im2row_kernels_count(void);
const im2row_kernels *im2row_kernels_at(int index);
/* Look up by name; NULL if not compiled in or not supported by this CPU. */
const im2row_kernels *im2row_kernels_find(const char *isa);

/* Pack A (m x k, row-major, lda) into `mr`-row panels; dst holds ceil(m/mr)*mr*k floats. */
void im2row_pack_a(float *dst, const float *a, ptrdiff_t lda, ptrdiff_t m, ptrdiff_t k, ptrdiff_t mr);

/* Pack W (n x k row-major, lda; k index = tap*kc + channel) and bias (n floats, NULL = 0)
 * into nr-column panels; dst holds ceil(n/nr) * nr * (1 + k) floats. */
/* k steps per slice of an igemm-nhwc weight panel for this host (the L1 share a packed GEMM
 * strip gets, kernels/gemm-blocking.c), for a register tile of mr pixels x nr columns. */
ptrdiff_t im2row_igemm_nhwc_kslice(ptrdiff_t mr, ptrdiff_t nr);
void im2row_pack_igemm_nhwc(float *dst, const float *w, ptrdiff_t lda, const float *bias,
                            ptrdiff_t n, ptrdiff_t k, ptrdiff_t nr);

/* Scalar and SIMD variants (defined per ISA file). */
void im2row_gather__scalar(float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t);
void im2row_scatter_bias__scalar(float *, ptrdiff_t, const float *, ptrdiff_t, float);
void im2row_dwconv__scalar(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                           ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                           ptrdiff_t, ptrdiff_t, float);
void im2row_dwconv_s2__scalar(float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                              ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t,
                              float);
void im2row_gemm__scalar(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, const float *const *,
                         float *, ptrdiff_t, ptrdiff_t, int, const float *, const im2row_gemm_blocking *,
                         float *);

void im2row_igemm_nhwc__scalar(ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                               ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *const *, ptrdiff_t,
                               const float *, float *, ptrdiff_t);
void im2row_dwconv_nhwc__scalar(ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *const *, ptrdiff_t,
                                ptrdiff_t, const float *, float *, ptrdiff_t);
extern const ptrdiff_t im2row_igemm_nhwc_mr__scalar, im2row_igemm_nhwc_nr__scalar;
void im2row_transpose__scalar(ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t);

#ifdef __cplusplus
}
#endif
#endif
