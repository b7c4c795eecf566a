# cython: language_level=3
"""nogil convolution driver: im2row buffers + GEMM (SciPy's sgemm or our packed kernel).

Layout inside the core is NCHW, one image and one group at a time.  Every algorithm is
    out_g[OCg, positions] = W_g[OCg, K] @ P[K, positions]
with P a view of a buffer whose rows run along output positions, so both the gather that fills
it and the GEMM read contiguous memory.  Python (im2row/plan.py) chooses the algorithm and its
parameters; this module only executes, and tells Python how much scratch a plan needs.
"""
from libc.string cimport memset
from libc.stdint cimport uint64_t, uintptr_t
from scipy.linalg.cython_blas cimport sgemm
from cython.parallel cimport parallel, prange, threadid

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "fingerprint.h" nogil:
    enum: IM2ROW_FINGERPRINT_WORDS
    void im2row_fingerprint(const void *data, size_t nbytes, uint64_t *out)

cdef extern from "im2row_kernels.h" nogil:
    ctypedef void (*im2row_gather_fn)(float *dst, const float *src, Py_ssize_t src_len,
                                      Py_ssize_t start, Py_ssize_t stride, Py_ssize_t n)
    ctypedef void (*im2row_scatter_fn)(float *dst, Py_ssize_t dst_stride, const float *src,
                                       Py_ssize_t n, float bias)
    ctypedef void (*im2row_dwconv_fn)(float *out, Py_ssize_t out_stride, Py_ssize_t oh,
                                      Py_ssize_t ow, const float *phases, Py_ssize_t hp,
                                      Py_ssize_t phase_w, const float *w, Py_ssize_t kh,
                                      Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                                      Py_ssize_t dh, Py_ssize_t dw, float bias)
    ctypedef void (*im2row_dwconv_s2_fn)(float *out, Py_ssize_t out_stride, Py_ssize_t oh,
                                         Py_ssize_t ow, const float *plane, Py_ssize_t height,
                                         Py_ssize_t width, Py_ssize_t pad_top,
                                         Py_ssize_t pad_left, const float *w, Py_ssize_t kh,
                                         Py_ssize_t kw, float bias)
    enum: IM2ROW_DWCONV_S2_MAX_KW
    ctypedef struct im2row_gemm_blocking:
        Py_ssize_t kc, kc_m, mc, nc
        int copy_b
    ctypedef struct im2row_gemm_tile:
        Py_ssize_t mr, nr, rows, nr_m
    ctypedef struct im2row_cache_info:
        Py_ssize_t l1d_bytes, l1d_ways, l2_bytes, l2_ways, l3_bytes, l3_ways, l3_sharing
        Py_ssize_t line_bytes, page_bytes
        const char *source
    ctypedef void (*im2row_gemm_fn)(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                                    const float *a_packed, const float *const *b_rows,
                                    float *c, Py_ssize_t ldc, Py_ssize_t cs, int accumulate,
                                    const float *bias, const im2row_gemm_blocking *blocking,
                                    float *work)
    ctypedef struct im2row_kernels:
        const char *isa
        im2row_gather_fn gather
        im2row_scatter_fn scatter_bias
        im2row_dwconv_fn dwconv
        im2row_dwconv_s2_fn dwconv_s2
        im2row_gemm_fn gemm
        Py_ssize_t gemm_mr
        const im2row_gemm_tile *gemm_tile
    void im2row_cache_info_get(im2row_cache_info *out)
    int im2row_cache_info_from(const char *source, im2row_cache_info *out)
    void im2row_gemm_blocking_model(const im2row_gemm_tile *tile, const im2row_cache_info *caches,
                                    im2row_gemm_blocking *out)
    void im2row_gemm_blocking_resolve(const im2row_gemm_tile *tile, Py_ssize_t m, Py_ssize_t n,
                                      Py_ssize_t k, const im2row_gemm_blocking *request,
                                      im2row_gemm_blocking *out)
    Py_ssize_t im2row_gemm_work_floats(const im2row_gemm_tile *tile, Py_ssize_t m, Py_ssize_t n,
                                       Py_ssize_t k,
                                       const im2row_gemm_blocking *request)
    int im2row_cpu_has_avx2_fma()
    int im2row_cpu_has_avx512()
    int im2row_cpu_has_neon()
    int im2row_kernels_count()
    const im2row_kernels *im2row_kernels_at(int index)
    const im2row_kernels *im2row_kernels_find(const char *isa)
    void im2row_pack_a(float *dst, const float *a, Py_ssize_t lda, Py_ssize_t m, Py_ssize_t k,
                       Py_ssize_t mr)

# Algorithm codes shared with im2row/plan.py (ALGORITHM_CODES there).
DEF ALG_CLASSIC = 0
DEF ALG_INCREMENTAL = 1
DEF ALG_POINTWISE = 2
DEF ALG_DEPTHWISE = 3
DEF ALG_ROWWISE = 4

ALGORITHMS = {"classic": ALG_CLASSIC, "incremental": ALG_INCREMENTAL,
              "pointwise": ALG_POINTWISE, "depthwise": ALG_DEPTHWISE,
              "rowwise": ALG_ROWWISE}


cdef struct Geometry:
    Py_ssize_t C, H, W, OC, kh, kw, sh, sw, pt, pl, dh, dw, OH, OW, groups, Cg, OCg


cdef struct Schedule:
    # Incremental im2row: the output columns are split into G classes, class t holding the
    # columns t, t+G, t+2G, ...  Stepping t -> t+1 moves every window right by one output
    # column (sw input columns), so taps that stay in the window keep their buffer slot
    # (a ring over the kw slots) and only `rot` new taps per class are gathered.
    Py_ssize_t G, B                 # classes, windows per class (buffer width)
    Py_ssize_t rot                  # slots the ring advances per class; 0 = no reuse
    Py_ssize_t rows                 # input rows held, phase-sorted by row % sh
    Py_ssize_t phase_base[64]       # first buffer row of each stride phase
    Py_ssize_t phase_rows[64]       # its capacity: phase_lead + RB
    Py_ssize_t phase_lead[64]       # rows a phase holds beyond the band's output rows; -1 unused
    Py_ssize_t RB                   # output rows per band: a band goes through every class
                                    # before the next, so its output and ring stay in cache
    Py_ssize_t K                    # GEMM depth per kernel row: Cg * kw
    Py_ssize_t CB                   # output channels per pass over the classes, so the
                                    # weights one pass reads stay in cache
    # Classic im2row: input channels per pass.  The patch matrix of one pass (CC*kh*kw rows)
    # is the buffer and the passes' GEMMs accumulate, so a small map with many channels keeps
    # a GEMM as wide as the whole output within a buffer smaller than the input.
    Py_ssize_t CC
    bint direct                     # the packed GEMM writes a class's columns straight into
                                    # the output (column stride G, needs G * B == OW)
    im2row_gemm_blocking gemm       # the packed GEMM's blocking request (0 = the model's)
    Py_ssize_t gemm_work            # floats of B-strip copy buffer per worker; 0 = B read in place
    Py_ssize_t dw_floats            # channel-blocked depthwise: one worker's scratch


cdef int _make_schedule(const Geometry *g, Py_ssize_t column_block, Py_ssize_t channel_block,
                        Py_ssize_t row_block, bint packed, Schedule *s) noexcept nogil:
    cdef Py_ssize_t i, p, q0, b
    s.CB = channel_block if 0 < channel_block < g.OCg else g.OCg
    s.RB = row_block if 0 < row_block < g.OH else g.OH
    s.direct = False
    if g.sh > 64:
        return -1
    b = column_block
    if b < 1:
        b = 1
    if b > g.OW:
        b = g.OW
    s.G = (g.OW + b - 1) // b
    s.B = (g.OW + s.G - 1) // s.G
    s.rot = 0
    if g.sw % g.dw == 0 and g.sw // g.dw < g.kw and s.G > 1:
        s.rot = g.sw // g.dw
    for p in range(g.sh):
        s.phase_lead[p] = -1
    for i in range(g.kh):
        p = (i * g.dh) % g.sh
        q0 = (i * g.dh) // g.sh
        if q0 > s.phase_lead[p]:
            s.phase_lead[p] = q0
    s.rows = 0
    for p in range(g.sh):
        s.phase_base[p] = s.rows
        s.phase_rows[p] = s.phase_lead[p] + s.RB if s.phase_lead[p] >= 0 else 0
        s.rows += s.phase_rows[p]
    s.K = g.Cg * g.kw
    s.direct = packed and s.G > 1 and s.G * s.B == g.OW
    return 0


cdef inline Py_ssize_t _input_pass(const Geometry *g, int code,
                                   Py_ssize_t channel_block) noexcept nogil:
    """Input channels per pass: classic splits them by channel_block; depthwise with channel
    multiplier 1 takes blocks of channel_block channels (_dw_blocked); the rest take all."""
    if code == ALG_CLASSIC and 0 < channel_block < g.Cg:
        return channel_block
    if code == ALG_DEPTHWISE and channel_block > 1 and g.OCg == 1:
        return channel_block if channel_block < g.C else g.C
    return g.Cg


cdef inline bint _dw_blocked(const Geometry *g, int code, const Schedule *s) noexcept nogil:
    """Depthwise in blocks of s.CC channels through the channels-last kernel (vectorised
    across channels), instead of plane by plane (vectorised along rows): small maps, whose
    rows fill few lanes, many channels."""
    return code == ALG_DEPTHWISE and s.CC > 1


cdef inline Py_ssize_t _dw_block_count(const Geometry *g, Py_ssize_t per_block) noexcept nogil:
    return (g.C + per_block - 1) // per_block


cdef inline Py_ssize_t _input_passes(const Geometry *g, Py_ssize_t per_pass) noexcept nogil:
    return (g.Cg + per_pass - 1) // per_pass


cdef int _schedule_for(const Geometry *g, int code, Py_ssize_t column_block,
                       Py_ssize_t channel_block, Py_ssize_t row_block, bint packed,
                       Schedule *s) except -1:
    """The incremental schedule; other algorithms do not use one (nor its stride limit).
    RB is also the band of the channel-blocked depthwise path, whose scratch is sized here."""
    cdef NhwcWork dw
    s.gemm.kc = s.gemm.kc_m = s.gemm.mc = s.gemm.nc = 0
    s.gemm.copy_b = 0
    s.gemm_work = 0
    s.dw_floats = 0
    s.CC = _input_pass(g, code, channel_block)
    if _make_schedule(g, column_block, channel_block, row_block, packed, s) != 0:
        if code == ALG_INCREMENTAL:
            raise ValueError("incremental im2row supports vertical strides up to 64")
        s.G = 1
        s.B = g.OW
        s.rot = 0
        s.rows = 0
        s.K = g.Cg * g.kw
    if _dw_blocked(g, code, s):
        _dw_block_work(g, s, &dw)
        s.dw_floats = _dw_block_worker_floats(&dw)
    return 0


cdef Py_ssize_t _row_pointers(const Geometry *g, int algorithm, const Schedule *s) noexcept nogil:
    """Row pointers the packed GEMM's B operand needs (one per GEMM depth index of a pass)."""
    if algorithm == ALG_DEPTHWISE:
        return 0    # (the channel-blocked path's tables are in its band work)
    if algorithm == ALG_CLASSIC:
        return s.CC * g.kh * g.kw
    return g.Cg * g.kh * g.kw


cdef inline Py_ssize_t _phase_width(const Geometry *g) noexcept nogil:
    """Floats of one stride phase of a padded input row: output column ox at tap j reads
    phase (j*dw) % sw at index ox + (j*dw) // sw."""
    return g.OW + ((g.kw - 1) * g.dw) // g.sw


cdef inline bint _rows_in_place(const Geometry *g) noexcept nogil:
    """Row-wise im2row reads the input rows themselves (no band copied) when every tap's
    output row is one contiguous piece of an input row: unit horizontal stride and no
    horizontal padding (1-D signals, 'valid' convolutions).  Taps in vertical padding read
    a zero row."""
    return g.sw == 1 and g.pl == 0 and g.OW + (g.kw - 1) * g.dw == g.W


cdef inline bint _reads_vertical_padding(const Geometry *g) noexcept nogil:
    """Some window has a kernel row above or below the input (1-D rows and 'valid' maps:
    none, so row-wise im2row in place needs no zero row)."""
    return g.pt > 0 or (g.OH - 1) * g.sh - g.pt + (g.kh - 1) * g.dh >= g.H


cdef inline Py_ssize_t _band_span(const Geometry *g, Py_ssize_t nrows) noexcept nogil:
    """Input rows a band of nrows output rows reads."""
    return (nrows - 1) * g.sh + (g.kh - 1) * g.dh + 1


cdef Py_ssize_t _data_floats(const Geometry *g, int algorithm, const Schedule *s) noexcept nogil:
    cdef Py_ssize_t hp, phase_w
    if algorithm == ALG_INCREMENTAL:
        # ring buffer + (unless one class covers the whole width) a pass's GEMM output
        return s.K * s.rows * s.B + (s.CB * s.RB * s.B if s.G > 1 and not s.direct else 0)
    if algorithm == ALG_CLASSIC:
        return s.CC * g.kh * g.kw * g.OH * g.OW
    if algorithm == ALG_POINTWISE:
        if _pointwise_is_view(g):
            return 0
        return g.Cg * g.OH * g.OW
    if algorithm == ALG_DEPTHWISE:
        if _dw_blocked(g, algorithm, s):   # a band's channels-last work
            return s.dw_floats
        if _dw_reads_plane(g):
            return 0
        return g.sw * _band_span(g, g.OH) * _phase_width(g)
    if algorithm == ALG_ROWWISE:
        if _rows_in_place(g):   # one zero row, for the taps in vertical padding
            return g.OW if _reads_vertical_padding(g) else 0
        return g.Cg * _band_span(g, s.RB) * g.sw * _phase_width(g)
    return -1


cdef Py_ssize_t _scratch_floats(const Geometry *g, int algorithm, const Schedule *s) noexcept nogil:
    """Scratch one worker needs for one (image, group): the buffer, a pass's output block,
    the row pointers (kept 8-byte aligned after the floats) and the packed GEMM's B strip."""
    cdef Py_ssize_t data = _data_floats(g, algorithm, s)
    return data + (data & 1) + 2 * _row_pointers(g, algorithm, s) + s.gemm_work


cdef inline float *_work_area(const Geometry *g, int algorithm, const Schedule *s,
                              float *scratch) noexcept nogil:
    """A worker's B-strip buffer for the packed GEMM (the end of its scratch); NULL: in place."""
    if s.gemm_work == 0 or scratch == NULL:
        return NULL
    return scratch + _scratch_floats(g, algorithm, s) - s.gemm_work


cdef int _schedule_gemm(const Geometry *g, int algorithm, const im2row_kernels *kern, bint packed,
                        Py_ssize_t gemm_kc, Py_ssize_t gemm_mc, Schedule *s) noexcept nogil:
    """The packed GEMM's blocking request and the B-strip buffer it needs per worker (at the
    widest GEMM this plan runs: n output positions)."""
    cdef Py_ssize_t n = g.OH * g.OW, m = g.OCg
    s.gemm.kc = gemm_kc if gemm_kc > 0 else 0
    s.gemm.mc = gemm_mc if gemm_mc > 0 else 0
    s.gemm.nc = s.gemm.kc_m = 0
    s.gemm.copy_b = 0
    s.gemm_work = 0
    if algorithm == ALG_INCREMENTAL:
        n = s.RB * s.B
        m = s.CB
    elif algorithm == ALG_ROWWISE:
        n = g.OW
    if packed and kern != NULL and kern.gemm_tile != NULL and algorithm != ALG_DEPTHWISE:
        s.gemm_work = im2row_gemm_work_floats(kern.gemm_tile, m, n, _row_pointers(g, algorithm, s),
                                              &s.gemm)
    return 0


cdef inline const float **_pointer_area(const Geometry *g, int algorithm, const Schedule *s,
                                        float *scratch) noexcept nogil:
    cdef Py_ssize_t data = _data_floats(g, algorithm, s)
    return <const float **>(scratch + data + (data & 1))


cdef inline bint _pointwise_is_view(const Geometry *g) noexcept nogil:
    return g.sh == 1 and g.sw == 1 and g.pt == 0 and g.pl == 0 and g.OH == g.H and g.OW == g.W


cdef inline void _strided_rows(const float **rows, const float *b, Py_ssize_t k,
                               Py_ssize_t ldb) noexcept nogil:
    cdef Py_ssize_t kk
    for kk in range(k):
        rows[kk] = b + kk * ldb


cdef inline void _sgemm(Py_ssize_t m_rows, Py_ssize_t n_cols, Py_ssize_t k,
                        const float *weights, const float *b, Py_ssize_t ldb, float *c,
                        Py_ssize_t ldc, bint accumulate) noexcept nogil:
    """c[m_rows, n_cols] (+)= weights[m_rows, k] @ b[k, n_cols], all row-major, by BLAS."""
    cdef char trans = b'N'
    cdef float one = 1.0
    cdef float beta = 1.0 if accumulate else 0.0
    cdef int m_, n_, k_, ldb_, lda_, ldc_
    # Row-major C = W @ P is column-major C^T = P^T W^T: P is Fortran's A (n_cols x k, lda=ldb).
    m_ = <int>n_cols
    n_ = <int>m_rows
    k_ = <int>k
    lda_ = <int>ldb
    ldb_ = <int>k
    ldc_ = <int>ldc
    sgemm(&trans, &trans, &m_, &n_, &k_, &one, <float *>b, &lda_, <float *>weights, &ldb_,
          &beta, c, &ldc_)


cdef inline void _gather_row(const im2row_kernels *kern, float *dst, const float *plane,
                             Py_ssize_t h, Py_ssize_t height, Py_ssize_t width,
                             Py_ssize_t start, Py_ssize_t stride, Py_ssize_t n) noexcept nogil:
    """dst[k] = plane[h][start + k*stride], zero outside the plane (rows h out of range are
    padding rows: all zeros)."""
    if 0 <= h < height:
        kern.gather(dst, plane + h * width, width, start, stride, n)
    else:
        kern.gather(dst, NULL, 0, start, stride, n)


cdef void _fill_bias(float *out, Py_ssize_t planes, Py_ssize_t plane_size,
                     const float *bias) noexcept nogil:
    cdef Py_ssize_t p, q
    cdef float v
    for p in range(planes):
        v = bias[p] if bias != NULL else 0.0
        if v == 0.0:
            memset(out + p * plane_size, 0, plane_size * sizeof(float))
        else:
            for q in range(plane_size):
                out[p * plane_size + q] = v


# ---- the phases of one (image, group) ------------------------------------------------------
# Each algorithm is split into a fill (over input channels [c0, c1)) and a GEMM + epilogue
# (over output channels [oc0, oc1)), so threads can share one buffer and split the work.

# Rows this short are gathered inline: on small maps (SSD's 3x3 and 5x5 heads) the gather
# kernel's call cost outweighs the few floats it moves.
DEF SHORT_ROW = 8


cdef inline void _gather_short(float *dst, const float *plane, Py_ssize_t h, Py_ssize_t height,
                               Py_ssize_t width, Py_ssize_t start, Py_ssize_t stride,
                               Py_ssize_t n) noexcept nogil:
    """_gather_row for a few floats, without the kernel call."""
    cdef Py_ssize_t k, w = start
    if h < 0 or h >= height:
        for k in range(n):
            dst[k] = 0.0
        return
    plane += h * width
    for k in range(n):
        dst[k] = plane[w] if 0 <= w < width else 0.0
        w += stride


cdef void _patch_fill(const Geometry *g, const im2row_kernels *kern, const float *x,
                      float *patches, Py_ssize_t first, Py_ssize_t c0,
                      Py_ssize_t c1) noexcept nogil:
    """Classic patch matrix rows (c, i, j) for channels [c0, c1) of a matrix whose row 0 is
    channel `first`'s (a pass's): row = one tap's view of the input at every output position."""
    cdef Py_ssize_t c, i, j, oh, M = g.OH * g.OW
    cdef float *row
    for c in range(c0, c1):
        for i in range(g.kh):
            for j in range(g.kw):
                row = patches + (((c - first) * g.kh + i) * g.kw + j) * M
                for oh in range(g.OH):
                    if g.OW <= SHORT_ROW:
                        _gather_short(row + oh * g.OW, x + c * g.H * g.W,
                                      oh * g.sh - g.pt + i * g.dh, g.H, g.W, j * g.dw - g.pl,
                                      g.sw, g.OW)
                    else:
                        _gather_row(kern, row + oh * g.OW, x + c * g.H * g.W,
                                    oh * g.sh - g.pt + i * g.dh, g.H, g.W, j * g.dw - g.pl,
                                    g.sw, g.OW)


cdef void _patch_gemm(const Geometry *g, const im2row_kernels *kern, bint packed,
                      const float *patches, const float *const *rows, Py_ssize_t K,
                      const float *w, const float *bias, float *out, Py_ssize_t oc0,
                      Py_ssize_t oc1, bint first, const im2row_gemm_blocking *blocking,
                      float *work) noexcept nogil:
    """Output channels [oc0, oc1) of classic / pointwise: one GEMM of depth K on the patch
    matrix of one input-channel pass (rows: the pointers to its rows, for the packed GEMM;
    work: its B-strip buffer or NULL), added to the output.  The first pass starts from the
    bias: the packed GEMM's accumulators hold it, for sgemm it is written into the output
    first."""
    cdef Py_ssize_t M = g.OH * g.OW
    cdef const float *first_bias = bias + oc0 if first and bias != NULL else NULL
    if packed:
        kern.gemm(oc1 - oc0, M, K, w + oc0 * K, rows, out + oc0 * M, M, 1, not first, first_bias,
                  blocking, work)
    else:
        if first:
            _fill_bias(out + oc0 * M, oc1 - oc0, M, first_bias)
        _sgemm(oc1 - oc0, M, K, w + oc0 * K, patches, M, out + oc0 * M, M, True)


cdef void _ring_fill(const Geometry *g, const Schedule *s, const im2row_kernels *kern,
                     const float *x, float *ring, Py_ssize_t t, bint refill,
                     Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t oh0,
                     Py_ssize_t nrows) noexcept nogil:
    """Bring the ring buffer to column class t of the band of output rows [oh0, oh0+nrows),
    for channels [c0, c1): only the taps that are new since class t-1 are gathered, unless
    refill (first class of a band a worker sees)."""
    cdef Py_ssize_t offset = (t * s.rot) % g.kw
    cdef Py_ssize_t jfirst = 0 if (refill or s.rot == 0) else g.kw - s.rot
    cdef Py_ssize_t j, slot, c, p, q, top = oh0 * g.sh - g.pt
    for j in range(jfirst, g.kw):
        slot = (j + offset) % g.kw
        for c in range(c0, c1):
            for p in range(g.sh):
                if s.phase_lead[p] < 0:
                    continue
                for q in range(s.phase_lead[p] + nrows):
                    _gather_row(kern, ring + ((c * g.kw + slot) * s.rows + s.phase_base[p] + q) * s.B,
                                x + c * g.H * g.W, top + q * g.sh + p, g.H, g.W,
                                t * g.sw - g.pl + j * g.dw, s.G * g.sw, s.B)


cdef void _ring_rows(const Geometry *g, const Schedule *s, const float *ring, Py_ssize_t t,
                     const float **rows) noexcept nogil:
    """The patch matrix of class t as row pointers into the ring, in the weights' own
    (c, i, j) order: kernel row i is the fixed row offset of its stride phase, tap j sits in
    slot (j + offset) % kw.  The packed GEMM then needs neither copies nor rotated weights."""
    cdef Py_ssize_t offset = (t * s.rot) % g.kw
    cdef Py_ssize_t c, i, j, start
    for c in range(g.Cg):
        for i in range(g.kh):
            start = s.phase_base[(i * g.dh) % g.sh] + (i * g.dh) // g.sh
            for j in range(g.kw):
                rows[(c * g.kh + i) * g.kw + j] = (
                    ring + ((c * g.kw + (j + offset) % g.kw) * s.rows + start) * s.B)


cdef void _ring_gemm(const Geometry *g, const Schedule *s, const im2row_kernels *kern,
                     bint packed, Py_ssize_t weight_block, const float *ring,
                     const float *const *rows, const float *w, const float *bias, float *out,
                     float *block_rows, Py_ssize_t t, Py_ssize_t oc0, Py_ssize_t oc1,
                     Py_ssize_t oh0, Py_ssize_t nrows, bint first, float *work) noexcept nogil:
    """Output channels [oc0, oc1) of column class t, output rows [oh0, oh0 + nrows).

    packed: one GEMM over every kernel row through `rows` (see _ring_rows).  sgemm: one GEMM
    per kernel row on a fixed-offset view of the ring, with weights pre-rotated to the ring's
    slot order.  The GEMM accumulates into the output itself when one class covers the width
    or the schedule is direct (bias written first, when `first`), else it writes block_rows
    (row oc0 of the class's output) and the class's columns are scattered out."""
    cdef Py_ssize_t offset = (t * s.rot) % g.kw
    cdef Py_ssize_t M = nrows * s.B, ldb = s.rows * s.B, ktotal = g.kh * s.K
    cdef Py_ssize_t i, p, oc, oh, windows, ldc, plane = g.OH * g.OW
    cdef bint in_place = s.G == 1 or s.direct
    cdef float *c_out
    if in_place:
        ldc = plane
        c_out = out + oc0 * plane + oh0 * g.OW + t
        if first:
            _fill_bias(out + oc0 * plane, oc1 - oc0, plane, bias + oc0 if bias != NULL else NULL)
    else:
        ldc = M
        c_out = block_rows
    if packed:
        kern.gemm(oc1 - oc0, M, ktotal, w + oc0 * ktotal, rows, c_out, ldc,
                  s.G if in_place else 1, in_place, NULL, &s.gemm, work)
    else:
        for i in range(g.kh):
            p = (i * g.dh) % g.sh
            _sgemm(oc1 - oc0, M, s.K, w + (offset * g.kh + i) * weight_block + oc0 * s.K,
                   ring + (s.phase_base[p] + (i * g.dh) // g.sh) * s.B, ldb, c_out, ldc,
                   in_place or i > 0)
    if not in_place:
        windows = (g.OW - t + s.G - 1) // s.G
        for oc in range(oc0, oc1):
            for oh in range(nrows):
                kern.scatter_bias(out + (oc * g.OH + oh0 + oh) * g.OW + t, s.G,
                                  block_rows + (oc - oc0) * M + oh * s.B, windows,
                                  bias[oc] if bias != NULL else 0.0)


cdef void _run_classes(const Geometry *g, const Schedule *s, const im2row_kernels *kern,
                       bint packed, Py_ssize_t weight_block, const float *x, const float *w,
                       const float *bias, float *out, float *scratch, Py_ssize_t t0,
                       Py_ssize_t t1, bint prefilled) noexcept nogil:
    """Improved im2row over column classes [t0, t1) with a private scratch, in passes of
    s.CB output channels (each pass walks the classes again, refilling the ring once).
    prefilled: the caller already wrote the bias into the output (threads sharing classes)."""
    cdef Py_ssize_t t, ob, ob_end, oh0, nrows
    cdef float *block_rows = scratch + s.K * s.rows * s.B
    cdef const float **rows = _pointer_area(g, ALG_INCREMENTAL, s, scratch)
    ob = 0
    while ob < g.OCg:
        ob_end = ob + s.CB if ob + s.CB < g.OCg else g.OCg
        oh0 = 0
        while oh0 < g.OH:
            nrows = s.RB if oh0 + s.RB <= g.OH else g.OH - oh0
            for t in range(t0, t1):
                _ring_fill(g, s, kern, x, scratch, t, t == t0, 0, g.Cg, oh0, nrows)
                if packed:
                    _ring_rows(g, s, scratch, t, rows)
                _ring_gemm(g, s, kern, packed, weight_block, scratch, rows, w, bias, out,
                           block_rows, t, ob, ob_end, oh0, nrows,
                           oh0 == 0 and t == t0 and not prefilled,
                           _work_area(g, ALG_INCREMENTAL, s, scratch))
            oh0 += nrows
        ob = ob_end


cdef void _phase_rows(const Geometry *g, const im2row_kernels *kern, const float *plane,
                      float *dst, Py_ssize_t top, Py_ssize_t nrows,
                      Py_ssize_t capacity) noexcept nogil:
    """Input rows top .. top+nrows-1 of one plane, zero-padded and split into the sw stride
    phases: dst[p][r] (capacity rows per phase, _phase_width floats per row) holds padded
    row top + r, columns p, p + sw, ...  (the layout the depthwise kernel reads)."""
    cdef Py_ssize_t phase_w = _phase_width(g)
    cdef Py_ssize_t p, r
    for p in range(g.sw):
        for r in range(nrows):
            _gather_row(kern, dst + (p * capacity + r) * phase_w, plane, top + r, g.H, g.W,
                        p - g.pl, g.sw, phase_w)


cdef void _band_fill(const Geometry *g, const Schedule *s, const im2row_kernels *kern,
                     const float *x, float *band, Py_ssize_t c0, Py_ssize_t c1,
                     Py_ssize_t oh0, Py_ssize_t nrows) noexcept nogil:
    """Row-wise im2row: copy the input rows that output rows [oh0, oh0+nrows) read, for
    channels [c0, c1), in stride phases (one _phase_rows block per channel).  Every input
    element is copied once per band (the band's kh-1 halo rows twice)."""
    cdef Py_ssize_t span = _band_span(g, s.RB), c
    for c in range(c0, c1):
        _phase_rows(g, kern, x + c * g.H * g.W, band + c * g.sw * span * _phase_width(g),
                    oh0 * g.sh - g.pt, _band_span(g, nrows), span)


cdef inline void _row_gemm(const Geometry *g, const Schedule *s, const im2row_kernels *kern,
                           const float *const *rows, const float *w, const float *bias,
                           float *out, Py_ssize_t oy, Py_ssize_t col0, Py_ssize_t col1,
                           float *work) noexcept nogil:
    """Output row oy, columns [col0, col1), of every output channel: one packed GEMM over all
    of K (B rows: `rows`, at col0), its accumulators started from the bias (no pass of its
    own over the output)."""
    cdef Py_ssize_t K = g.Cg * g.kh * g.kw, plane = g.OH * g.OW
    kern.gemm(g.OCg, col1 - col0, K, w, rows, out + oy * g.OW + col0, plane, 1, 0, bias,
              &s.gemm, work)


cdef void _band_gemm(const Geometry *g, const Schedule *s, const im2row_kernels *kern,
                     const float *band, const float **rows, const float *w, const float *bias,
                     float *out, Py_ssize_t oh0, Py_ssize_t nrows, float *work) noexcept nogil:
    """One packed GEMM per output row of the band (_row_gemm).  Its patch matrix is kh*kw*Cg
    row pointers into the band: no copy at all."""
    cdef Py_ssize_t span = _band_span(g, s.RB), phase_w = _phase_width(g)
    cdef Py_ssize_t oy, c, i, j, tap
    for oy in range(nrows):
        for c in range(g.Cg):
            for i in range(g.kh):
                for j in range(g.kw):
                    tap = j * g.dw
                    rows[(c * g.kh + i) * g.kw + j] = (
                        band + ((c * g.sw + tap % g.sw) * span + oy * g.sh + i * g.dh) * phase_w
                        + tap // g.sw)
        _row_gemm(g, s, kern, rows, w, bias, out, oh0 + oy, 0, g.OW, work)


cdef void _input_rows_gemm(const Geometry *g, const Schedule *s, const im2row_kernels *kern,
                           const float *x, const float *zeros, const float **rows,
                           const float *w, const float *bias, float *out, Py_ssize_t oh0,
                           Py_ssize_t nrows, Py_ssize_t col0, Py_ssize_t col1,
                           float *work) noexcept nogil:
    """Row-wise im2row on the input itself (_rows_in_place): as _band_gemm, with the patch
    matrix's rows pointing into x (or at `zeros` for rows in the vertical padding), output
    columns [col0, col1) only (unit stride, no horizontal padding: column q reads q + j*dw)."""
    cdef Py_ssize_t oy, c, i, j, r
    for oy in range(oh0, oh0 + nrows):
        for c in range(g.Cg):
            for i in range(g.kh):
                r = oy * g.sh - g.pt + i * g.dh
                for j in range(g.kw):
                    rows[(c * g.kh + i) * g.kw + j] = (
                        x + (c * g.H + r) * g.W + j * g.dw + col0 if 0 <= r < g.H
                        else zeros + col0)
        _row_gemm(g, s, kern, rows, w, bias, out, oy, col0, col1, work)


cdef void _run_bands(const Geometry *g, const Schedule *s, const im2row_kernels *kern,
                     const float *x, const float *w, const float *bias, float *out,
                     float *scratch, Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t col0,
                     Py_ssize_t col1) noexcept nogil:
    """Row-wise im2row over bands [b0, b1) of s.RB output rows, with a private scratch;
    output columns [col0, col1) (a part of the width only in place: _rows_in_place)."""
    cdef const float **rows = _pointer_area(g, ALG_ROWWISE, s, scratch)
    cdef Py_ssize_t b, oh0, nrows, q
    cdef bint in_place = _rows_in_place(g)
    if in_place and _reads_vertical_padding(g):    # the scratch is the zero row
        for q in range(g.OW):
            scratch[q] = 0.0
    for b in range(b0, b1):
        oh0 = b * s.RB
        nrows = s.RB if oh0 + s.RB <= g.OH else g.OH - oh0
        if in_place:
            _input_rows_gemm(g, s, kern, x, scratch, rows, w, bias, out, oh0, nrows, col0, col1,
                             _work_area(g, ALG_ROWWISE, s, scratch))
        else:
            _band_fill(g, s, kern, x, scratch, 0, g.Cg, oh0, nrows)
            _band_gemm(g, s, kern, scratch, rows, w, bias, out, oh0, nrows,
                       _work_area(g, ALG_ROWWISE, s, scratch))


cdef inline bint _dw_reads_plane(const Geometry *g) noexcept nogil:
    """Planar depthwise that f32-dwconv-s2 runs on the input plane itself (its phase split in
    registers, nothing copied): stride 2 (an axis with one output may have any, the core
    then says 1), no dilation, kernels up to 7 wide."""
    return ((g.sh == 2 or g.OH == 1) and (g.sw == 2 or g.OW == 1) and (g.sh == 2 or g.sw == 2)
            and g.dh == 1 and g.dw == 1 and g.kw <= IM2ROW_DWCONV_S2_MAX_KW)


cdef void _run_depthwise(const Geometry *g, const im2row_kernels *kern, const float *x,
                         const float *w, const float *bias, float *out, float *scratch) noexcept nogil:
    """groups == C: one input plane feeds OCg output planes; GEMM would have K = kh*kw."""
    cdef Py_ssize_t hp = _band_span(g, g.OH)
    cdef Py_ssize_t phase_w = _phase_width(g)
    cdef Py_ssize_t m
    if _dw_reads_plane(g):
        for m in range(g.OCg):
            kern.dwconv_s2(out + m * g.OH * g.OW, g.OW, g.OH, g.OW, x, g.H, g.W, g.pt, g.pl,
                           w + m * g.kh * g.kw, g.kh, g.kw, bias[m] if bias != NULL else 0.0)
        return
    _phase_rows(g, kern, x, scratch, -g.pt, hp, hp)
    for m in range(g.OCg):
        kern.dwconv(out + m * g.OH * g.OW, g.OW, g.OH, g.OW, scratch, hp, phase_w,
                    w + m * g.kh * g.kw, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw,
                    bias[m] if bias != NULL else 0.0)


cdef const float *_patches_ready(const Geometry *g, int code, const im2row_kernels *kern,
                                 const float *x, float *scratch, Py_ssize_t c0,
                                 Py_ssize_t c1) noexcept nogil:
    """Fill channels [c0, c1) of the patch matrix (nothing for a 1x1 that reads x itself);
    returns the matrix."""
    if code == ALG_POINTWISE and _pointwise_is_view(g):
        return x
    _patch_fill(g, kern, x, scratch, c0, c0, c1)
    return scratch


cdef void _run_task(const Geometry *g, const Schedule *s, int code, const im2row_kernels *kern,
                    bint packed, Py_ssize_t weight_block, const float *x, const float *w,
                    const float *bias, float *out, float *scratch) noexcept nogil:
    """One whole (image, group), serially, with a private scratch."""
    cdef const float *patches
    cdef const float **rows
    cdef Py_ssize_t c0 = 0, c1, taps = g.kh * g.kw
    if code == ALG_INCREMENTAL:
        _run_classes(g, s, kern, packed, weight_block, x, w, bias, out, scratch, 0, s.G, False)
    elif code == ALG_ROWWISE:
        _run_bands(g, s, kern, x, w, bias, out, scratch, 0, (g.OH + s.RB - 1) // s.RB, 0, g.OW)
    elif code == ALG_DEPTHWISE:
        _run_depthwise(g, kern, x, w, bias, out, scratch)
    else:
        rows = _pointer_area(g, code, s, scratch)
        while c0 < g.Cg:
            c1 = c0 + s.CC if c0 + s.CC < g.Cg else g.Cg
            patches = _patches_ready(g, code, kern, x, scratch, c0, c1)
            _strided_rows(rows, patches, (c1 - c0) * taps, g.OH * g.OW)
            _patch_gemm(g, kern, packed, patches, rows, (c1 - c0) * taps,
                        w + (c0 // s.CC) * weight_block, bias, out, 0, g.OCg, c0 == 0, &s.gemm,
                        _work_area(g, code, s, scratch))
            c0 = c1


cdef class KernelSet:
    """A handle on one ISA's kernel table."""
    cdef const im2row_kernels *kern

    @property
    def isa(self):
        return self.kern.isa.decode()

    @property
    def gemm_mr(self):
        return self.kern.gemm_mr


cdef KernelSet _wrap(const im2row_kernels *kern):
    cdef KernelSet ks = KernelSet.__new__(KernelSet)
    ks.kern = kern
    return ks


def available_isas():
    """ISAs compiled into this build and supported by this CPU, best first."""
    return [im2row_kernels_at(i).isa.decode() for i in range(im2row_kernels_count())]


def kernel_set(str isa):
    cdef const im2row_kernels *kern = im2row_kernels_find(isa.encode())
    if kern == NULL:
        raise ValueError(f"ISA {isa!r} is not available here; available: {available_isas()}")
    return _wrap(kern)


def cpu_features():
    return {"avx2_fma": bool(im2row_cpu_has_avx2_fma()), "avx512": bool(im2row_cpu_has_avx512()),
            "neon": bool(im2row_cpu_has_neon())}


# Every size the core derives (buffers, planes, patch matrices) must fit a Py_ssize_t with
# room to spare; a tuple that breaks this is refused before any C arithmetic sees it.
_MAX_DIM = 1 << 40
_MAX_FLOATS = 1 << 60


cdef int _geometry(tuple spec, Geometry *g) except -1:
    """Unpack and check the per-image geometry tuple (plan.core_spec): the core trusts nothing
    it is handed, so a zero stride or a negative size is a ValueError, never a C modulo by 0."""
    names = ("C", "H", "W", "OC", "kh", "kw", "sh", "sw", "pt", "pl", "dh", "dw", "OH", "OW",
             "groups")
    if len(spec) != len(names):
        raise ValueError(f"core: geometry needs {len(names)} values, got {len(spec)}")
    for name, value in zip(names, spec):
        if type(value) is not int:
            raise TypeError(f"core: geometry {name} must be an int, got {value!r}")
        low = 0 if name in ("pt", "pl") else 1
        if not low <= value < _MAX_DIM:
            raise ValueError(f"core: geometry {name} = {value} is out of range")
    C, H, W, OC, kh, kw, sh, sw, pt, pl, dh, dw, OH, OW, groups = spec
    if C % groups or OC % groups:
        raise ValueError(f"core: {C} input / {OC} output channels are not divisible by "
                         f"{groups} groups")
    taps = (C // groups) * kh * kw
    span_h = (OH - 1) * sh + (kh - 1) * dh + 1
    phases = sw * (OW + ((kw - 1) * dw) // sw)      # floats of one padded row's stride phases
    if max(taps * OH * OW, C * H * W, OC * OH * OW, C * span_h * phases) >= _MAX_FLOATS:
        raise ValueError("core: the convolution is too large to address")
    (g.C, g.H, g.W, g.OC, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.dh, g.dw, g.OH, g.OW,
     g.groups) = spec
    g.Cg = g.C // g.groups
    g.OCg = g.OC // g.groups
    return 0


DEF MODE_TASKS = 0      # threads take whole (image, group) tasks, private scratch each
DEF MODE_CLASSES = 1    # threads take chunks of column classes of one image, private scratch
DEF MODE_CHANNELS = 2   # threads share one buffer: split the fill by input channel, the GEMM
                        # by output channel


cdef int _parallel_mode(const Geometry *g, const Schedule *s, int code, Py_ssize_t tasks,
                        int threads, bint shared) noexcept nogil:
    # shared: inside one image, threads share one buffer (workspace as for one thread)
    # rather than taking column classes with a buffer each.
    if threads <= 1 or tasks >= threads or code == ALG_DEPTHWISE:
        return MODE_TASKS
    if code == ALG_ROWWISE:
        return MODE_CLASSES     # bands, each thread with its own (small) band buffer
    if code == ALG_INCREMENTAL and s.G >= 2 * threads and not shared:
        return MODE_CLASSES
    return MODE_CHANNELS


cdef Py_ssize_t _call_scratch(const Geometry *g, int code, Schedule *s, Py_ssize_t batch,
                              int threads, bint shared, int *mode) noexcept nogil:
    """Floats one call allocates: per-thread scratch, or one shared scratch when threads split
    the output channels (each pass then covers them all)."""
    mode[0] = _parallel_mode(g, s, code, batch * g.groups, threads, shared)
    if mode[0] == MODE_CHANNELS:
        s.CB = g.OCg
        s.gemm_work = 0     # threads share one buffer: their GEMMs read B in place
        return _scratch_floats(g, code, s)
    return _scratch_floats(g, code, s) * (threads if threads > 1 else 1)


def scratch_floats(tuple spec, str algorithm, Py_ssize_t column_block,
                   Py_ssize_t channel_block=0, Py_ssize_t row_block=0, Py_ssize_t batch=1,
                   int threads=1, bint packed=True, bint shared=False, KernelSet kernels=None,
                   Py_ssize_t gemm_kc=0, Py_ssize_t gemm_mc=0):
    """Floats of scratch one call of this plan allocates (the workspace), for `threads`
    (kernels: the packed GEMM's ISA, whose B-strip buffer counts too; None: without it)."""
    cdef Geometry g
    cdef Schedule s
    cdef int mode
    _geometry(spec, &g)
    code = ALGORITHMS[algorithm]
    _schedule_for(&g, code, column_block, channel_block, row_block, packed, &s)
    _schedule_gemm(&g, code, kernels.kern if kernels is not None else NULL, packed, gemm_kc,
                   gemm_mc, &s)
    return _call_scratch(&g, code, &s, batch, threads, shared, &mode)


def schedule_info(tuple spec, Py_ssize_t column_block, Py_ssize_t channel_block=0,
                  Py_ssize_t row_block=0, bint packed=True):
    """Incremental schedule: dict of classes, windows (per class), rotation (ring slots per
    class), rows (buffer rows), channels_per_pass, rows_per_band, direct (GEMM writes the
    output)."""
    cdef Geometry g
    cdef Schedule s
    _geometry(spec, &g)
    _schedule_for(&g, ALG_INCREMENTAL, column_block, channel_block, row_block, packed, &s)
    return {"classes": s.G, "windows": s.B, "rotation": s.rot, "rows": s.rows,
            "channels_per_pass": s.CB, "rows_per_band": s.RB, "direct": bool(s.direct)}


def parallel_mode(tuple spec, str algorithm, Py_ssize_t column_block, Py_ssize_t batch,
                  int threads, bint shared=False):
    """How `run` splits work for this plan: 'tasks', 'classes' or 'channels'."""
    cdef Geometry g
    cdef Schedule s
    _geometry(spec, &g)
    code = ALGORITHMS[algorithm]
    _schedule_for(&g, code, column_block, 0, 0, False, &s)
    return ("tasks", "classes", "channels")[
        _parallel_mode(&g, &s, code, batch * g.groups, threads, shared)]


cdef bint _rotated_weights(int code, bint packed) noexcept nogil:
    # Only the sgemm form of incremental im2row reads the ring slot-rotated weights; the
    # packed GEMM follows the rotation through its row pointers.
    return code == ALG_INCREMENTAL and not packed


def pack_weights(tuple spec, str algorithm, cnp.ndarray weight, KernelSet kernels,
                 bint packed, Py_ssize_t channel_block=0):
    """Arrange the (OC, Cg, kh, kw) weights the way `algorithm` reads them.

    Returns a float32 array: per group, the GEMM's left operand(s), plain row-major or packed
    into kernels.gemm_mr-row panels for our GEMM.  Incremental im2row on sgemm needs one copy
    per ring offset (slot s holds tap (s - offset) % kw) and per kernel row.  Classic im2row in
    passes of channel_block input channels needs one matrix per pass (the last one's columns
    short of a whole pass: the block keeps a whole pass's size)."""
    cdef Geometry g
    cdef cnp.ndarray[cnp.float32_t, ndim=2] plain
    cdef cnp.ndarray[cnp.float32_t, ndim=1] dst
    cdef Py_ssize_t m, k, mr, blocks, b, block, per_pass, passes, q, k0, kq, ntaps
    _geometry(spec, &g)
    code = ALGORITHMS[algorithm]
    if channel_block < 0:
        raise ValueError("core: channel_block must be >= 0")
    per_pass = _input_pass(&g, code, channel_block)
    if per_pass < g.Cg:
        passes = _input_passes(&g, per_pass)
        ntaps = g.kh * g.kw
        full = np.ascontiguousarray(weight, dtype=np.float32).reshape(
            g.groups, g.OCg, g.Cg * ntaps)
        mr = kernels.kern.gemm_mr if packed else 1
        block = _weight_block(&g, code, kernels.kern if kernels is not None else NULL, packed, per_pass)
        dst = np.zeros(g.groups * passes * block, dtype=np.float32)
        for b in range(g.groups):
            for q in range(passes):
                k0 = q * per_pass * ntaps
                kq = min(per_pass * ntaps, g.Cg * ntaps - k0)
                plain = np.ascontiguousarray(full[b, :, k0:k0 + kq])
                if packed:
                    im2row_pack_a(&dst[(b * passes + q) * block], &plain[0, 0], kq, g.OCg, kq, mr)
                else:
                    dst[(b * passes + q) * block:(b * passes + q) * block + g.OCg * kq] = (
                        plain.reshape(-1))
        return dst
    w = np.ascontiguousarray(weight, dtype=np.float32).reshape(
        g.groups, g.OCg, g.Cg, g.kh, g.kw)
    if code == ALG_DEPTHWISE:
        return np.ascontiguousarray(w.reshape(-1))
    if _rotated_weights(code, packed):
        offsets = np.arange(g.kw)
        # mats[g, offset, i] = (OCg, Cg*kw) with column (c, slot) = w[.., c, i, (slot-offset)%kw]
        taps = (offsets[None, :] - offsets[:, None]) % g.kw          # [offset, slot] -> tap
        mats = w[:, :, :, :, taps]                                    # g, OCg, Cg, kh, off, slot
        mats = mats.transpose(0, 4, 3, 1, 2, 5).reshape(g.groups * g.kw * g.kh, g.OCg, g.Cg * g.kw)
    else:
        mats = w.reshape(g.groups, g.OCg, g.Cg * g.kh * g.kw)
    mats = np.ascontiguousarray(mats, dtype=np.float32)
    if not packed:
        return mats.reshape(-1)
    m = mats.shape[1]
    k = mats.shape[2]
    mr = kernels.kern.gemm_mr
    block = ((m + mr - 1) // mr) * mr * k
    blocks = mats.shape[0]
    dst = np.zeros(blocks * block, dtype=np.float32)
    for b in range(blocks):
        plain = mats[b]
        im2row_pack_a(&dst[b * block], &plain[0, 0], k, m, k, mr)
    return dst


cdef inline Py_ssize_t _dw_block_floats(const Geometry *g, Py_ssize_t per_block) noexcept nogil:
    return _dw_block_count(g, per_block) * (1 + g.kh * g.kw) * per_block


def pack_depthwise_blocks(tuple spec, cnp.ndarray weight, object bias, Py_ssize_t channel_block):
    """Depthwise weights (C, 1, kh, kw) for the channel-blocked path: per block of
    channel_block channels (the last one short), a row of its biases, then one row of its
    channels' weights per tap (what the NHWC depthwise kernel reads)."""
    cdef Geometry g
    cdef Schedule s
    _geometry(spec, &g)
    s.CC = _input_pass(&g, ALG_DEPTHWISE, channel_block)
    if not _dw_blocked(&g, ALG_DEPTHWISE, &s):
        raise ValueError("core: channel blocks need depthwise with channel multiplier 1 and "
                         "channel_block >= 2")
    ks = g.kh * g.kw
    taps = np.ascontiguousarray(weight, dtype=np.float32).reshape(g.C, ks)
    b = (np.zeros(g.C, np.float32) if bias is None
         else np.ascontiguousarray(bias, dtype=np.float32).reshape(g.C))
    dst = np.zeros(_dw_block_floats(&g, s.CC), dtype=np.float32)
    for c0 in range(0, g.C, s.CC):
        cb = min(s.CC, g.C - c0)
        block = dst[c0 * (1 + ks):c0 * (1 + ks) + (1 + ks) * cb].reshape(1 + ks, cb)
        block[0] = b[c0:c0 + cb]
        block[1:] = taps[c0:c0 + cb].T
    return dst


cdef Py_ssize_t _weight_block(const Geometry *g, int code, const im2row_kernels *kern,
                              bint packed, Py_ssize_t per_pass) noexcept nogil:
    """Floats between consecutive GEMM weight matrices in pack_weights' output (per_pass:
    input channels per classic pass)."""
    cdef Py_ssize_t k = g.Cg * g.kw if _rotated_weights(code, packed) else per_pass * g.kh * g.kw
    cdef Py_ssize_t m = g.OCg
    if packed:
        m = ((m + kern.gemm_mr - 1) // kern.gemm_mr) * kern.gemm_mr
    return m * k


cdef int _check_blas_sizes(const Geometry *g, const Schedule *s, int code) except -1:
    """SciPy's sgemm takes Fortran ints: every size and leading dimension an sgemm call of
    this plan passes must fit in 32 bits (the packed GEMM takes ptrdiff_t and has no limit)."""
    cdef Py_ssize_t largest = max(g.OH * g.OW, g.Cg * g.kh * g.kw, g.OCg)
    if code == ALG_INCREMENTAL:
        largest = max(largest, s.rows * s.B, s.RB * s.B, s.K)
    if largest > 2147483647:
        raise ValueError(f"this shape needs a BLAS dimension of {largest}, beyond sgemm's 32-bit "
                         f"sizes; use gemm='packed'")
    return 0


_poison_workspace = False


def set_workspace_poison(bint on):
    """Testing aid: fill every workspace with NaN before a call, so that a kernel reading
    scratch it did not write shows up as a wrong result (workspaces are not zeroed)."""
    global _poison_workspace
    _poison_workspace = on


# Idle workspaces a Convolution keeps for its next calls (concurrent callers take one each;
# beyond this many, a returning one is freed).
DEF IDLE_WORKSPACES = 2


cdef class _WorkspacePool:
    """The workspaces of one prepared convolution: a call takes one at least as large as it
    needs (np.empty: never zeroed; NaN-filled when poisoning) and gives it back afterwards."""
    cdef list _idle

    def __cinit__(self):
        self._idle = []

    cdef cnp.ndarray take(self, Py_ssize_t floats):
        cdef cnp.ndarray work
        while self._idle:
            work = self._idle.pop()
            if work.shape[0] >= floats:
                break
        else:       # none idle, or all too small (those are dropped)
            work = np.empty(floats, dtype=np.float32)
        if _poison_workspace:
            work.fill(np.nan)
        return work

    cdef give(self, cnp.ndarray work):
        if len(self._idle) < IDLE_WORKSPACES:
            self._idle.append(work)


cdef class Convolution:
    """One convolution shape prepared for one plan: geometry, schedule and kernel table are
    checked and built once; the packed weights (pack_weights) and the bias are referenced, not
    copied, so an owner that rewrites them in place (Conv2d.update) updates every shape that
    shares them.  Workspaces are allocated on first use per size and reused, never zeroed.

    run(x, out, threads) convolves x (N, C, H, W) into out (N, OC, OH, OW), both C-contiguous
    float32, without the GIL on up to `threads` OpenMP threads.  Safe to call from several
    Python threads at once (each call takes its own workspace)."""
    cdef Geometry g
    cdef Schedule s
    cdef int code
    cdef const im2row_kernels *kern
    cdef bint packed, shared
    cdef Py_ssize_t wblock, group_weights
    cdef readonly cnp.ndarray weights
    cdef readonly object bias
    cdef readonly str algorithm
    cdef readonly KernelSet kernels
    cdef _WorkspacePool _pool

    def __init__(self, tuple spec, str algorithm, Py_ssize_t column_block,
                 Py_ssize_t channel_block, Py_ssize_t row_block, KernelSet kernels,
                 bint packed, bint shared, cnp.ndarray weights, object bias,
                 Py_ssize_t gemm_kc=0, Py_ssize_t gemm_mc=0):
        cdef cnp.ndarray bias_arr
        if algorithm not in ALGORITHMS:
            raise ValueError(f"core: unknown algorithm {algorithm!r}")
        _geometry(spec, &self.g)
        self.code = ALGORITHMS[algorithm]
        self.algorithm = algorithm
        self.kernels = kernels
        self.kern = kernels.kern
        self.packed = packed and self.code != ALG_DEPTHWISE
        self.shared = shared
        if self.packed and self.kern.gemm == NULL:
            raise ValueError(f"ISA {kernels.isa} has no packed GEMM")
        if self.code == ALG_ROWWISE and not self.packed:
            raise ValueError("rowwise im2row needs the packed GEMM (its B rows are pointers)")
        if column_block < 0 or channel_block < 0 or row_block < 0:
            raise ValueError("core: blocks must be >= 0")
        _schedule_for(&self.g, self.code, column_block, channel_block, row_block, self.packed,
                      &self.s)
        if gemm_kc < 0 or gemm_mc < 0:
            raise ValueError("core: gemm_kc and gemm_mc must be >= 0 (0 = the model's)")
        _schedule_gemm(&self.g, self.code, self.kern, self.packed, gemm_kc, gemm_mc, &self.s)
        if not self.packed and self.code != ALG_DEPTHWISE:
            _check_blas_sizes(&self.g, &self.s, self.code)
        if (weights.dtype != np.float32 or weights.ndim != 1
                or not weights.flags.c_contiguous):
            raise ValueError("core: weights must be pack_weights' 1-D float32 array")
        self.wblock = _weight_block(&self.g, self.code, self.kern, self.packed, self.s.CC)
        if _rotated_weights(self.code, self.packed):
            self.group_weights = self.wblock * self.g.kw * self.g.kh
        elif self.code == ALG_DEPTHWISE:
            self.group_weights = self.g.OCg * self.g.kh * self.g.kw
        else:
            self.group_weights = self.wblock * _input_passes(&self.g, self.s.CC)
        expected = self.group_weights * self.g.groups
        if _dw_blocked(&self.g, self.code, &self.s):
            expected = _dw_block_floats(&self.g, self.s.CC)
        if weights.shape[0] != expected:
            raise ValueError("core: packed weights do not match the plan")
        self.weights = weights
        if bias is not None:
            bias_arr = bias
            if (bias_arr.dtype != np.float32 or bias_arr.ndim != 1
                    or bias_arr.shape[0] != self.g.OC or not bias_arr.flags.c_contiguous):
                raise ValueError("core: bias must be a contiguous float32 array of length OC")
        self.bias = bias
        self._pool = _WorkspacePool()

    cdef Py_ssize_t _floats(self, Py_ssize_t batch, int threads, Schedule *s, int *mode):
        s[0] = self.s
        return _call_scratch(&self.g, self.code, s, batch if batch > 0 else 1,
                             threads if threads > 0 else 1, self.shared, mode)

    def workspace_floats(self, Py_ssize_t batch=1, int threads=1):
        """Floats of workspace one call of `batch` images on `threads` threads uses."""
        cdef Schedule s
        cdef int mode
        return self._floats(batch, threads, &s, &mode)

    def run(self, cnp.ndarray x not None, cnp.ndarray out not None, int threads=1):
        cdef Schedule s
        cdef int mode
        cdef int nthreads = threads if threads > 0 else 1
        cdef Py_ssize_t N, total
        cdef cnp.ndarray work = None
        cdef const Geometry *g = &self.g
        if x.dtype != np.float32 or out.dtype != np.float32:
            raise TypeError("core expects float32 arrays")
        if not (x.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError("core expects C-contiguous arrays")
        if not out.flags.writeable:
            raise ValueError("core: out is read-only")
        if (x.ndim != 4 or out.ndim != 4 or x.shape[1] != g.C or x.shape[2] != g.H
                or x.shape[3] != g.W or out.shape[0] != x.shape[0] or out.shape[1] != g.OC
                or out.shape[2] != g.OH or out.shape[3] != g.OW):
            raise ValueError("core: array shapes do not match the spec")
        N = x.shape[0]
        if N == 0:
            return out
        total = self._floats(N, nthreads, &s, &mode)
        if total > 0:
            work = self._pool.take(total)
        try:
            _execute(g, &s, self.code, mode, self.kern, self.packed, self.wblock,
                     self.group_weights, <const float *>cnp.PyArray_DATA(x),
                     <const float *>cnp.PyArray_DATA(self.weights),
                     <const float *>cnp.PyArray_DATA(self.bias) if self.bias is not None else NULL,
                     <float *>cnp.PyArray_DATA(out),
                     <float *>cnp.PyArray_DATA(work) if work is not None else NULL,
                     N, nthreads)
        finally:
            if work is not None:
                self._pool.give(work)
        return out


cdef int _execute(const Geometry *g, Schedule *s, int code, int mode,
                  const im2row_kernels *kern, bint packed, Py_ssize_t wblock,
                  Py_ssize_t group_weights, const float *xp, const float *wp, const float *bp,
                  float *op, float *scratch, Py_ssize_t N, int nthreads) except -1:
    """One call's work over N images, split as `mode` says; scratch holds _call_scratch
    floats for that mode."""
    cdef Py_ssize_t scratch_n = _scratch_floats(g, code, s), tasks = N * g.groups
    cdef Py_ssize_t task, n, grp, chunk, nchunks, units, lo, hi, t, align, oh0, nrows, c0, c1
    cdef Py_ssize_t width, q0, q1
    cdef bint by_columns
    cdef int tid
    cdef float *mine
    cdef const float *xg
    cdef const float *wg
    cdef const float *bg
    cdef float *og
    cdef const float *patches
    cdef const float **rows
    cdef NhwcWork dw
    if _dw_blocked(g, code, s):
        # (image, channel block, band) tasks; the weights (bias inside) are the blocks'
        _dw_block_work(g, s, &dw)
        units = _dw_block_count(g, s.CC) * dw.nbands
        with nogil, parallel(num_threads=nthreads):
            tid = threadid()
            mine = _line_aligned(scratch + tid * scratch_n)
            _dw_forget_band(mine)
            for task in prange(N * units, schedule='static'):
                _depthwise_block(g, s, &dw, kern, xp + (task // units) * g.C * g.H * g.W, wp,
                                 op + (task // units) * g.OC * g.OH * g.OW, mine,
                                 (task % units) // dw.nbands, task % dw.nbands)
        return 0
    if mode == MODE_TASKS:
        with nogil, parallel(num_threads=nthreads):
            tid = threadid()
            mine = scratch + tid * scratch_n if scratch != NULL else NULL
            for task in prange(tasks, schedule='static'):
                n = task // g.groups
                grp = task % g.groups
                _run_task(g, s, code, kern, packed, wblock,
                          xp + (n * g.C + grp * g.Cg) * g.H * g.W, wp + grp * group_weights,
                          bp + grp * g.OCg if bp != NULL else NULL,
                          op + (n * g.OC + grp * g.OCg) * g.OH * g.OW, mine)
        return 0
    # Fewer (image, group) tasks than threads: split inside each one.
    align = kern.gemm_mr if packed else 16  # packed channel chunks start on a panel
    rows = _pointer_area(g, code, s, scratch)
    for task in range(tasks):
        n = task // g.groups
        grp = task % g.groups
        xg = xp + (n * g.C + grp * g.Cg) * g.H * g.W
        wg = wp + grp * group_weights
        bg = bp + grp * g.OCg if bp != NULL else NULL
        og = op + (n * g.OC + grp * g.OCg) * g.OH * g.OW
        if mode == MODE_CLASSES:
            # chunks of column classes (incremental) or of row bands (rowwise), each thread
            # with its own buffer
            units = (g.OH + s.RB - 1) // s.RB if code == ALG_ROWWISE else s.G
            chunk = (units + nthreads - 1) // nthreads
            # Fewer bands than threads on the input itself (1-D rows: one band): the threads
            # take pieces of the width instead, whole cache lines of output each.
            by_columns = code == ALG_ROWWISE and units < nthreads and _rows_in_place(g)
            width = (g.OW + nthreads - 1) // nthreads
            width = (width + 15) // 16 * 16
            with nogil:
                if code == ALG_INCREMENTAL and s.direct:
                    _fill_bias(og, g.OCg, g.OH * g.OW, bg)
            with nogil, parallel(num_threads=nthreads):
                tid = threadid()
                for t in prange(nthreads, schedule='static'):
                    lo = t * chunk
                    hi = lo + chunk if lo + chunk < units else units
                    q0 = t * width
                    q1 = q0 + width if q0 + width < g.OW else g.OW
                    if by_columns:
                        if q0 < q1:
                            _run_bands(g, s, kern, xg, wg, bg, og,
                                       scratch + tid * scratch_n, 0, units, q0, q1)
                    elif lo < hi:
                        if code == ALG_ROWWISE:
                            _run_bands(g, s, kern, xg, wg, bg, og,
                                       scratch + tid * scratch_n, lo, hi, 0, g.OW)
                        else:
                            _run_classes(g, s, kern, packed, wblock, xg, wg, bg, og,
                                         scratch + tid * scratch_n, lo, hi, True)
            continue
        chunk = (g.OCg + nthreads - 1) // nthreads
        chunk = ((chunk + align - 1) // align) * align
        nchunks = (g.OCg + chunk - 1) // chunk
        if code == ALG_INCREMENTAL:
            oh0 = 0
            while oh0 < g.OH:
                nrows = s.RB if oh0 + s.RB <= g.OH else g.OH - oh0
                for t in range(s.G):
                    with nogil:
                        for lo in prange(g.Cg, num_threads=nthreads, schedule='static'):
                            _ring_fill(g, s, kern, xg, scratch, t, t == 0, lo, lo + 1,
                                       oh0, nrows)
                        if packed:
                            _ring_rows(g, s, scratch, t, rows)
                        for lo in prange(nchunks, num_threads=nthreads, schedule='static'):
                            hi = (lo + 1) * chunk if (lo + 1) * chunk < g.OCg else g.OCg
                            _ring_gemm(g, s, kern, packed, wblock, scratch, rows, wg, bg,
                                       og, scratch + s.K * s.rows * s.B + lo * chunk * nrows * s.B,
                                       t, lo * chunk, hi, oh0, nrows, oh0 == 0 and t == 0, NULL)
                oh0 += nrows
        else:
            # classic / pointwise, a pass of s.CC input channels at a time
            c0 = 0
            while c0 < g.Cg:
                c1 = c0 + s.CC if c0 + s.CC < g.Cg else g.Cg
                with nogil:
                    if code == ALG_POINTWISE and _pointwise_is_view(g):
                        patches = xg
                    else:
                        for lo in prange(c0, c1, num_threads=nthreads, schedule='static'):
                            _patch_fill(g, kern, xg, scratch, c0, lo, lo + 1)
                        patches = scratch
                    _strided_rows(rows, patches, (c1 - c0) * g.kh * g.kw, g.OH * g.OW)
                    for lo in prange(nchunks, num_threads=nthreads, schedule='static'):
                        hi = (lo + 1) * chunk if (lo + 1) * chunk < g.OCg else g.OCg
                        _patch_gemm(g, kern, packed, patches, rows, (c1 - c0) * g.kh * g.kw,
                                    wg + (c0 // s.CC) * wblock, bg, og, lo * chunk, hi, c0 == 0,
                                    &s.gemm, NULL)
                c0 = c1
    return 0


def address(cnp.ndarray a not None):
    """The address of an array's first element (a cache key; cheaper than __array_interface__)."""
    return <uintptr_t>cnp.PyArray_DATA(a)


def fingerprint(cnp.ndarray a not None):
    """A fingerprint of a C-contiguous array's bytes (kernels/include/fingerprint.h): how a
    cached layer checks, reading them once, that a caller's weights still hold its values."""
    if not a.flags.c_contiguous:
        raise ValueError("fingerprint needs a C-contiguous array")
    cdef uint64_t sums[IM2ROW_FINGERPRINT_WORDS]
    cdef const void *data = cnp.PyArray_DATA(a)
    cdef size_t n = a.nbytes
    with nogil:
        im2row_fingerprint(data, n, sums)
    return (<char *>sums)[:sizeof(sums)]


# ---- caches and the packed GEMM's blocking (kernels/cpuinfo.c, kernels/gemm-blocking.c) ----

cdef dict _cache_dict(const im2row_cache_info *c):
    return {"l1d": c.l1d_bytes, "l1d_ways": c.l1d_ways, "l2": c.l2_bytes, "l2_ways": c.l2_ways,
            "l3": c.l3_bytes, "l3_ways": c.l3_ways, "l3_sharing": c.l3_sharing,
            "line": c.line_bytes, "page": c.page_bytes, "source": c.source.decode()}


def cache_info(source=None):
    """The host's caches per core, detected once: dict of l1d, l2, l3 and line (bytes), their
    ways, l3_sharing (logical CPUs per L3; l3 == 0: none), page (bytes) and source ('sysfs', 'cpuid',
    'ctr_el0', 'fallback').  source= asks that one source only (None if it has no answer)."""
    cdef im2row_cache_info c
    if source is None:
        im2row_cache_info_get(&c)
        return _cache_dict(&c)
    if im2row_cache_info_from(str(source).encode(), &c) != 0:
        return None
    return _cache_dict(&c)


def gemm_blocking(KernelSet kernels, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, Py_ssize_t kc=0,
                  Py_ssize_t mc=0, Py_ssize_t nc=0, dict caches=None):
    """The blocking kernels' packed GEMM runs for an m x n x k product: dict kc, kc_m, mc, nc (after
    fitting to the shape) and work_floats (its B-strip buffer).  kc/mc/nc > 0 override the
    model; caches (a dict like cache_info()) evaluates the model for another host.  work_floats
    is 0 where B is read in place (rows less than a page apart)."""
    cdef im2row_gemm_blocking req, out
    cdef im2row_cache_info c
    if kernels.kern.gemm_tile == NULL:
        raise ValueError(f"ISA {kernels.isa} has no packed GEMM")
    if m < 1 or n < 1 or k < 1:
        raise ValueError(f"gemm_blocking needs m, n, k >= 1, got {m}, {n}, {k}")
    req.kc, req.kc_m, req.mc, req.nc, req.copy_b = 0, 0, 0, 0, 0
    if caches is not None:
        c.l1d_bytes, c.l1d_ways = caches["l1d"], caches["l1d_ways"]
        c.l2_bytes, c.l2_ways = caches["l2"], caches["l2_ways"]
        c.l3_bytes, c.l3_ways = caches["l3"], caches["l3_ways"]
        c.l3_sharing, c.line_bytes = caches["l3_sharing"], caches["line"]
        c.page_bytes = caches.get("page", 4096)
        c.source = b"given"
        im2row_gemm_blocking_model(kernels.kern.gemm_tile, &c, &req)
    if kc > 0:
        req.kc = kc
    if mc > 0:
        req.mc = mc
    if nc > 0:
        req.nc = nc
    im2row_gemm_blocking_resolve(kernels.kern.gemm_tile, m, n, k, &req, &out)
    return {"kc": out.kc, "kc_m": out.kc_m, "mc": out.mc, "nc": out.nc,
            "work_floats": im2row_gemm_work_floats(kernels.kern.gemm_tile, m, n, k, &req)}


def gemm_tile(KernelSet kernels):
    """kernels' register tile as the blocking model sees it: dict mr, nr, rows, nr_m."""
    cdef const im2row_gemm_tile *t = kernels.kern.gemm_tile
    if t == NULL:
        raise ValueError(f"ISA {kernels.isa} has no packed GEMM")
    return {"mr": t.mr, "nr": t.nr, "rows": t.rows, "nr_m": t.nr_m}


include "nhwc.pxi"
