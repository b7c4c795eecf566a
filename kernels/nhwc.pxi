# Channels-last (NHWC) driver, included by _core.pyx: convolution on NHWC data with no
# transposes.  Every path is an indirect kernel over a table of pointers into the input:
#   indirect   one pointer per (output pixel, tap) to the tap's Cg channels, a shared zero
#              vector for padding taps, so strides, dilation, padding and groups copy nothing;
#              a 1x1 stride-1 layer is one pointer per pixel straight into the input.
#   rowwise    (groups == 1, no horizontal dilation) the channels-last improved im2row: a
#              kernel row of output pixel (oh, ow) is kw*C contiguous floats of input row
#              oh*sh + i*dh at column ow*sw, so one pointer per (pixel, kernel row) at a fixed
#              offset replaces kw tap pointers and the GEMM depth per pointer is kw*C.  Only
#              windows that cross the left/right edge are copied, into small zero-padded
#              vectors; vertical padding points at the zero vector.
#   depthwise  (groups == C == OC) f32-dwconv-nhwc, vectorised across channels.  Per output
#              row, the columns whose windows lie inside the input row are one run at a
#              constant step (kh*kw pointers, no table); only the edge columns get a table.
# Prepared as NhwcConvolution (the counterpart of the core's Convolution).
# Work is split into bands of output rows (the plan's row_block) x chunks of output-channel
# panels; a band builds its pointer table, then the GEMM of every group reads it (groups
# differ only in a channel offset).  Weights are packed once with the bias interleaved.
# NCHW callers (nchw=True) run the same kernels band by band: a band's input rows are
# transposed into a channels-last buffer, its output computed channels-last into another and
# transposed into the planes, so the copies are two bands per worker, not the whole image.

cdef extern from "im2row_kernels.h" nogil:
    ctypedef void (*im2row_igemm_nhwc_fn)(Py_ssize_t m, Py_ssize_t n, Py_ssize_t ks,
                                          Py_ssize_t kc, Py_ssize_t kslice, Py_ssize_t tap0,
                                          Py_ssize_t ntaps, Py_ssize_t tap_rows,
                                          Py_ssize_t row_step, const float *const *a,
                                          Py_ssize_t a_offset, const float *w_packed, float *c,
                                          Py_ssize_t ldc)
    ctypedef void (*im2row_dwconv_nhwc_fn)(Py_ssize_t m, Py_ssize_t channels, Py_ssize_t ks,
                                           const float *const *a, Py_ssize_t a_stride,
                                           Py_ssize_t a_step, const float *w, float *out,
                                           Py_ssize_t out_stride)
    ctypedef void (*im2row_transpose_fn)(Py_ssize_t rows, Py_ssize_t cols, const float *src,
                                         Py_ssize_t lds, float *dst, Py_ssize_t ldd)
    # The fields of im2row_kernels this driver reads (the same C struct as the core's).
    ctypedef struct nhwc_kernels "im2row_kernels":
        im2row_igemm_nhwc_fn igemm_nhwc
        Py_ssize_t igemm_nhwc_mr
        Py_ssize_t igemm_nhwc_nr
        im2row_dwconv_nhwc_fn dwconv_nhwc
        im2row_transpose_fn transpose
    void im2row_pack_igemm_nhwc(float *dst, const float *w, Py_ssize_t lda, const float *bias,
                                Py_ssize_t n, Py_ssize_t k, Py_ssize_t nr)
    Py_ssize_t im2row_igemm_nhwc_kslice(Py_ssize_t mr, Py_ssize_t nr)

from libc.string cimport memcpy

# Algorithm codes of the NHWC path (im2row/plan.py: NHWC_ALGORITHMS).
DEF NHWC_INDIRECT = 0
DEF NHWC_ROWWISE = 1
DEF NHWC_DEPTHWISE = 2

NHWC_ALGORITHMS = {"indirect": NHWC_INDIRECT, "rowwise": NHWC_ROWWISE,
                   "depthwise": NHWC_DEPTHWISE}


cdef struct NhwcWork:
    int code
    Py_ssize_t RB, nbands       # output rows per band, bands per image
    Py_ssize_t ks, kc           # pointers per pixel, floats per pointer
    Py_ssize_t kslice           # k steps per slice of a weight panel (kept in L1)
    Py_ssize_t nr, panels       # panel width, panels per group
    Py_ssize_t chunk, nchunks   # panels per channel chunk, chunks
    Py_ssize_t group_floats     # packed weights per group
    Py_ssize_t border           # rowwise: output columns whose window crosses an edge
    Py_ssize_t zero_floats      # the shared zero vector
    bint nchw                   # NCHW arrays in and out: bands transposed in and out
    Py_ssize_t span             # NCHW: input rows between a band's first and last tap (at most)
    Py_ssize_t held             # NCHW: input rows a band's taps read (at most), transposed
    Py_ssize_t table_floats     # one worker's pointer table and border vectors
    Py_ssize_t band_in          # NCHW: floats of a band's channels-last input
    Py_ssize_t align_floats     # NCHW: slack to start the scratch on a cache line
    Py_ssize_t thread_floats    # one worker's scratch: table, then (NCHW) band input, output
    Py_ssize_t dw_calls         # depthwise: kernel calls of a band, at most
    bint column_runs            # indirect: calls per row and stretch of columns (_column_runs_pay)


cdef inline bint _window_inside(const Geometry *g, Py_ssize_t ow) noexcept nogil:
    """Rowwise: the kw*C floats of output column ow's kernel rows lie inside an input row."""
    cdef Py_ssize_t iw0 = ow * g.sw - g.pl
    return iw0 >= 0 and iw0 + g.kw <= g.W


cdef int _nhwc_code(str algorithm) except -1:
    try:
        return NHWC_ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown NHWC algorithm {algorithm!r}; "
                         f"known: {sorted(NHWC_ALGORITHMS)}") from None


DEF LINE_FLOATS = 16     # floats per 64-byte cache line

# One depthwise kernel call of a band: pixels, first pointer (index into the band's table),
# the pointer table's stride per pixel, the pixels' input step, output offset and stride.
DEF DW_CALL_FIELDS = 6
# A worker's band tables are kept while the next task has the same input rows, band and
# channels (the channel blocks of one band): a key of those, and the number of calls, ahead of
# the calls and pointers.  Invalidated at the start of every run (_dw_forget_band).
DEF DW_KEY_FIELDS = 5


cdef inline Py_ssize_t _round_up(Py_ssize_t n, Py_ssize_t unit) noexcept nogil:
    return (n + unit - 1) // unit * unit


cdef int _nhwc_work(const Geometry *g, int code, Py_ssize_t row_block, const nhwc_kernels *kern,
                    Py_ssize_t batch, int threads, bint nchw, NhwcWork *w) except -1:
    cdef Py_ssize_t ow, K, lo, hi, edges, run_cost, runs
    w.code = code
    w.nchw = nchw
    if code == NHWC_ROWWISE and (g.groups != 1 or g.dw != 1):
        raise ValueError("NHWC rowwise needs groups == 1 and horizontal dilation 1")
    if code == NHWC_DEPTHWISE and not (g.Cg == 1 and g.OCg == 1):
        raise ValueError("NHWC depthwise needs groups == in_channels == out_channels")
    w.RB = row_block if 0 < row_block < g.OH else g.OH
    w.nbands = (g.OH + w.RB - 1) // w.RB
    w.ks = g.kh if code == NHWC_ROWWISE else g.kh * g.kw
    w.kc = g.kw * g.C if code == NHWC_ROWWISE else g.Cg
    w.border = 0
    if code == NHWC_ROWWISE:
        for ow in range(g.OW):
            if not _window_inside(g, ow):
                w.border += 1
    if code == NHWC_DEPTHWISE:
        w.nr = 1
        w.panels = 1
        w.group_floats = (1 + g.kh * g.kw) * g.C
    else:
        K = g.kh * g.kw * g.Cg
        w.nr = kern.igemm_nhwc_nr
        w.panels = (g.OCg + w.nr - 1) // w.nr
        w.group_floats = w.panels * w.nr * (1 + K)
    # Too few bands to keep every thread busy: split the output channels too (not for NCHW
    # arrays, where a band's transposed input and output belong to one worker).
    w.nchunks = 1
    if code != NHWC_DEPTHWISE and threads > 1 and batch * w.nbands < 2 * threads and not nchw:
        w.nchunks = threads if threads < w.panels else w.panels
    w.chunk = (w.panels + w.nchunks - 1) // w.nchunks
    w.nchunks = (w.panels + w.chunk - 1) // w.chunk
    w.zero_floats = w.kc if code == NHWC_ROWWISE else g.C
    w.column_runs = code == NHWC_INDIRECT and _column_runs_pay(g, kern.igemm_nhwc_mr, &run_cost, &runs)
    w.thread_floats = 2 * w.RB * g.OW * w.ks + w.RB * w.border * g.kh * w.kc
    w.dw_calls = 0
    if code == NHWC_DEPTHWISE:
        # padding taps are NULL (skipped), no zero row.  A band's key, calls and pointers
        # (_depthwise_band): a call per row and per edge column and stretch of rows, the
        # pointers of one pixel per row and of every edge pixel.
        w.zero_floats = 0
        _dw_interior(g, &lo, &hi)
        edges = g.OW - (hi - lo)
        w.dw_calls = w.RB * (edges + 1)
        w.thread_floats = 2 * (DW_KEY_FIELDS + w.dw_calls * DW_CALL_FIELDS + w.dw_calls * w.ks)
    w.thread_floats += w.thread_floats & 1    # the next worker's pointers stay 8-byte aligned
    w.table_floats = w.thread_floats
    w.span = 0
    w.held = 0
    w.band_in = 0
    w.align_floats = LINE_FLOATS if nchw else 0
    if nchw:
        # The transposed bands start on cache lines (run() aligns the scratch): the kernels'
        # vector loads of a pixel's channels then split no line, which measured up to 2x
        # faster on channels-last depthwise rows.  Only the rows the band's taps read are
        # transposed (at most kh per output row: dilated kernels skip the rows between their
        # taps), found through a map of the span (after the output, 8-byte aligned).
        w.table_floats = _round_up(w.table_floats, LINE_FLOATS)
        w.span = (w.RB - 1) * g.sh + (g.kh - 1) * g.dh + 1
        if w.span > g.H:
            w.span = g.H
        w.held = w.RB * g.kh if w.RB * g.kh < w.span else w.span
        w.band_in = _round_up(w.held * g.W * g.C, LINE_FLOATS)
        w.thread_floats = _round_up(w.table_floats + w.band_in + _round_up(w.RB * g.OW * g.OC, 2)
                                    + 2 * w.span, LINE_FLOATS)
    return 0


cdef inline Py_ssize_t _nhwc_pool_floats(const NhwcWork *w, int nthreads) noexcept nogil:
    """What run() takes from the pool: every worker's part and the alignment slack."""
    return w.thread_floats * nthreads + w.align_floats


def nhwc_scratch_floats(tuple spec, str algorithm, Py_ssize_t row_block, KernelSet kernels,
                        Py_ssize_t batch=1, int threads=1, bint nchw=False):
    """Floats of scratch an NHWC plan uses per call (NhwcConvolution.workspace_floats, without
    preparing one): the zero vector and, per worker thread, the band's pointer table,
    (rowwise) its edge windows and (nchw) its transposed input and output."""
    cdef Geometry g
    cdef NhwcWork w
    cdef int nthreads = threads if threads > 0 else 1
    _geometry(spec, &g)
    _nhwc_work(&g, _nhwc_code(algorithm), row_block, <const nhwc_kernels *>kernels.kern,
               batch if batch > 0 else 1, nthreads, nchw, &w)
    return w.zero_floats + _nhwc_pool_floats(&w, nthreads)


def igemm_nhwc_tile(KernelSet kernels):
    """The channels-last GEMM's register tile and k slice as the cost model sees them: dict
    mr (pixels per tile), nr (output channels per panel), kslice (k steps per weight slice)."""
    cdef const nhwc_kernels *kern = <const nhwc_kernels *>kernels.kern
    return {"mr": kern.igemm_nhwc_mr, "nr": kern.igemm_nhwc_nr,
            "kslice": im2row_igemm_nhwc_kslice(kern.igemm_nhwc_mr, kern.igemm_nhwc_nr)}


def indirect_column_runs(tuple spec, Py_ssize_t mr):
    """How the indirect driver covers an output row (_column_runs_pay) for the cost model:
    (calls per row, tile-weighted tap share) with column runs, (0, 1.0) without (one call per
    stretch of rows, every kernel column's taps)."""
    cdef Geometry g
    cdef Py_ssize_t cost, runs
    _geometry(spec, &g)
    if not _column_runs_pay(&g, mr, &cost, &runs):
        return 0, 1.0
    return runs, cost / float(g.kw * g.OW)


def pack_weights_nhwc(tuple spec, str algorithm, cnp.ndarray weight, object bias,
                      KernelSet kernels):
    """The (OC, Cg, kh, kw) weights and the bias as the NHWC kernels read them: per group,
    im2row_pack_igemm_nhwc panels over K = (i, j, c) (both indirect and rowwise walk the
    input in that order); depthwise: a bias row then one row of C weights per tap."""
    cdef Geometry g
    cdef NhwcWork w
    cdef cnp.ndarray[cnp.float32_t, ndim=2] mat
    cdef cnp.ndarray[cnp.float32_t, ndim=1] dst, bvec
    cdef const nhwc_kernels *kern = <const nhwc_kernels *>kernels.kern
    cdef Py_ssize_t grp, K
    _geometry(spec, &g)
    code = _nhwc_code(algorithm)
    _nhwc_work(&g, code, 0, kern, 1, 1, False, &w)
    bvec = np.zeros(g.OC, dtype=np.float32) if bias is None else np.ascontiguousarray(
        bias, dtype=np.float32).reshape(g.OC)
    if code == NHWC_DEPTHWISE:
        taps = np.asarray(weight, dtype=np.float32).reshape(g.C, g.kh * g.kw).T
        return np.ascontiguousarray(np.concatenate([bvec[None, :], taps]).reshape(-1))
    K = g.kh * g.kw * g.Cg
    mats = np.ascontiguousarray(np.asarray(weight, dtype=np.float32).reshape(
        g.groups, g.OCg, g.Cg, g.kh, g.kw).transpose(0, 1, 3, 4, 2).reshape(g.groups, g.OCg, K))
    dst = np.empty(g.groups * w.group_floats, dtype=np.float32)
    for grp in range(g.groups):
        mat = mats[grp]
        im2row_pack_igemm_nhwc(&dst[grp * w.group_floats], &mat[0, 0], K, &bvec[grp * g.OCg],
                               g.OCg, K, w.nr)
    return dst


cdef inline const float *_input_row(const Geometry *g, const float *x, Py_ssize_t row0,
                                    const Py_ssize_t *rowmap, Py_ssize_t ih) noexcept nogil:
    """Input row ih (NHWC) in x, which holds the rows from row0 on, or (rowmap) those the map
    gives a place: rowmap[ih - row0]."""
    return x + (rowmap[ih - row0] if rowmap != NULL else ih - row0) * g.W * g.C


cdef void _nhwc_taps(const Geometry *g, const float *x, Py_ssize_t row0,
                     const Py_ssize_t *rowmap, const float *zero, Py_ssize_t oh0,
                     Py_ssize_t nrows, Py_ssize_t ow0, Py_ssize_t ow1,
                     const float **a) noexcept nogil:
    """One pointer per (output pixel, tap) of output rows [oh0, oh0 + nrows), columns
    [ow0, ow1), pixel-major.  x holds input rows as _input_row reads them."""
    cdef Py_ssize_t oh, ow, i, j, ih, iw
    for oh in range(oh0, oh0 + nrows):
        for ow in range(ow0, ow1):
            for i in range(g.kh):
                ih = oh * g.sh - g.pt + i * g.dh
                for j in range(g.kw):
                    iw = ow * g.sw - g.pl + j * g.dw
                    if 0 <= ih < g.H and 0 <= iw < g.W:
                        a[0] = _input_row(g, x, row0, rowmap, ih) + iw * g.C
                    else:
                        a[0] = zero
                    a += 1


cdef inline bint _taps_inside(const Geometry *g, Py_ssize_t ow) noexcept nogil:
    """Every horizontal tap of output column ow lies inside the input row."""
    cdef Py_ssize_t iw0 = ow * g.sw - g.pl
    return iw0 >= 0 and iw0 + (g.kw - 1) * g.dw < g.W


cdef void _depthwise_taps(const Geometry *g, const float *x, Py_ssize_t row0,
                          const Py_ssize_t *rowmap, Py_ssize_t oh, Py_ssize_t ow,
                          const float **a) noexcept nogil:
    """The kh*kw tap pointers of output pixel (oh, ow), NULL for taps in the padding (the
    depthwise kernel skips them).  x holds input rows as _input_row reads them."""
    cdef Py_ssize_t i, j, ih, iw0 = ow * g.sw - g.pl, j0 = 0, j1 = g.kw
    cdef const float *row
    while j0 < j1 and iw0 + j0 * g.dw < 0:
        j0 += 1
    while j1 > j0 and iw0 + (j1 - 1) * g.dw >= g.W:
        j1 -= 1
    for i in range(g.kh):
        ih = oh * g.sh - g.pt + i * g.dh
        if ih < 0 or ih >= g.H:
            for j in range(g.kw):
                a[j] = NULL
        else:
            row = _input_row(g, x, row0, rowmap, ih) + iw0 * g.C
            for j in range(j0):
                a[j] = NULL
            for j in range(j0, j1):
                a[j] = row + j * g.dw * g.C
            for j in range(j1, g.kw):
                a[j] = NULL
        a += g.kw


cdef inline void _dw_interior(const Geometry *g, Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """Output columns [lo, hi) whose taps all lie inside the input row (the others: edges)."""
    lo[0] = 0
    hi[0] = g.OW
    while lo[0] < hi[0] and not _taps_inside(g, lo[0]):
        lo[0] += 1
    while hi[0] > lo[0] and not _taps_inside(g, hi[0] - 1):
        hi[0] -= 1


cdef inline void _dw_forget_band(float *table) noexcept nogil:
    (<Py_ssize_t *>table)[0] = 0


cdef Py_ssize_t _dw_band_calls(const Geometry *g, const float *x, Py_ssize_t row0,
                               const Py_ssize_t *rowmap, Py_ssize_t oh0, Py_ssize_t nrows,
                               const float **a, Py_ssize_t *calls) noexcept nogil:
    """The kernel calls of output rows [oh0, oh0 + nrows): each row's columns whose taps all
    lie in the row are one run; each edge column goes down the band in stretches of rows with
    the same kernel rows inside the input, so every call's padding taps are the same ones,
    skipped (small maps under large kernels are mostly edge: 7x7 on 7x7 wastes 43% of its
    FMAs on padding), and edge calls still have several pixels for the kernel's tile.  Their
    pointers go to a, the calls (DW_CALL_FIELDS each) to calls; returns how many."""
    cdef Py_ssize_t lo, hi, ks = g.kh * g.kw, oh, ow, run, i0, i1, q, n = 0, used = 0
    _dw_interior(g, &lo, &hi)
    if lo < hi:
        for oh in range(oh0, oh0 + nrows):
            _depthwise_taps(g, x, row0, rowmap, oh, lo, a + used)
            calls[0], calls[1], calls[2], calls[3] = hi - lo, used, 0, g.sw * g.C
            calls[4], calls[5] = ((oh - oh0) * g.OW + lo) * g.OC, g.OC
            calls += DW_CALL_FIELDS
            used += ks
            n += 1
    for ow in range(g.OW):
        if lo <= ow < hi:
            continue
        oh = oh0
        while oh < oh0 + nrows:
            run = _same_rows_end(g, oh, oh0 + nrows, &i0, &i1)
            for q in range(oh, run):
                _depthwise_taps(g, x, row0, rowmap, q, ow, a + used + (q - oh) * ks)
            calls[0], calls[1], calls[2], calls[3] = run - oh, used, ks, 0
            calls[4], calls[5] = ((oh - oh0) * g.OW + ow) * g.OC, g.OW * g.OC
            calls += DW_CALL_FIELDS
            used += (run - oh) * ks
            n += 1
            oh = run
    return n


cdef void _depthwise_band(const Geometry *g, const NhwcWork *w, const nhwc_kernels *kern,
                          const float *x, Py_ssize_t row0, const Py_ssize_t *rowmap,
                          const float *wp, float *c, float *table, Py_ssize_t oh0,
                          Py_ssize_t nrows) noexcept nogil:
    """Output rows [oh0, oh0 + nrows) into c (nrows*OW*OC floats), by the calls of
    _dw_band_calls, whose tables (in `table`: the key, the calls, the pointers) are built
    only when the key differs: the channel blocks of one band read the same transposed rows
    at the same place, and their tables cost as much as the taps of 7x7 on 7x7 maps."""
    cdef Py_ssize_t *key = <Py_ssize_t *>table
    cdef Py_ssize_t *calls = key + DW_KEY_FIELDS
    cdef const float **a = <const float **>(calls + w.dw_calls * DW_CALL_FIELDS)
    cdef Py_ssize_t q
    cdef Py_ssize_t *call
    if not (key[0] == <Py_ssize_t>x and key[1] == oh0 and key[2] == nrows and key[3] == g.C):
        key[0] = <Py_ssize_t>x
        key[1] = oh0
        key[2] = nrows
        key[3] = g.C
        key[4] = _dw_band_calls(g, x, row0, rowmap, oh0, nrows, a, calls)
    for q in range(key[4]):
        call = calls + q * DW_CALL_FIELDS
        kern.dwconv_nhwc(call[0], g.C, g.kh * g.kw, a + call[1], call[2], call[3], wp,
                         c + call[4], call[5])


cdef void _nhwc_rows(const Geometry *g, const float *x, Py_ssize_t row0,
                     const Py_ssize_t *rowmap, const float *zero, float *border, Py_ssize_t oh0,
                     Py_ssize_t nrows, const float **a) noexcept nogil:
    """One pointer per (output pixel, kernel row): into the input row itself when the window
    lies inside it, else to a copy of its in-range taps with zeros around (border).  x holds
    input rows as _input_row reads them."""
    cdef Py_ssize_t oh, ow, i, j, ih, iw, iw0, row = g.kw * g.C
    cdef bint inside
    for oh in range(oh0, oh0 + nrows):
        for ow in range(g.OW):
            iw0 = ow * g.sw - g.pl
            inside = _window_inside(g, ow)
            for i in range(g.kh):
                ih = oh * g.sh - g.pt + i * g.dh
                if ih < 0 or ih >= g.H:
                    a[0] = zero
                elif inside:
                    a[0] = _input_row(g, x, row0, rowmap, ih) + iw0 * g.C
                else:
                    for j in range(g.kw):
                        iw = iw0 + j
                        if 0 <= iw < g.W:
                            memcpy(border + j * g.C, _input_row(g, x, row0, rowmap, ih) + iw * g.C,
                                   g.C * sizeof(float))
                        else:
                            memset(border + j * g.C, 0, g.C * sizeof(float))
                    a[0] = border
                    border += row
                a += 1


cdef inline void _inside_taps(Py_ssize_t first, Py_ssize_t k, Py_ssize_t dilation,
                              Py_ssize_t size, Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """The taps [lo, hi) of a k-tap window along one axis, its first tap at input position
    `first`, that lie inside [0, size) (contiguous; hi <= lo: none)."""
    cdef Py_ssize_t i, pos
    lo[0] = k
    hi[0] = 0
    for i in range(k):
        pos = first + i * dilation
        if 0 <= pos < size:
            if i < lo[0]:
                lo[0] = i
            hi[0] = i + 1


cdef inline Py_ssize_t _same_taps_end(Py_ssize_t start, Py_ssize_t end, Py_ssize_t stride,
                                      Py_ssize_t pad, Py_ssize_t k, Py_ssize_t dilation,
                                      Py_ssize_t size, Py_ssize_t *lo,
                                      Py_ssize_t *hi) noexcept nogil:
    """The end of the stretch of output positions from `start` (before `end`) along one axis
    whose windows have the same taps [lo, hi) inside the input as start's."""
    cdef Py_ssize_t run = start + 1, lo2, hi2
    _inside_taps(start * stride - pad, k, dilation, size, lo, hi)
    while run < end:
        _inside_taps(run * stride - pad, k, dilation, size, &lo2, &hi2)
        if lo2 != lo[0] or hi2 != hi[0]:
            break
        run += 1
    return run


cdef inline Py_ssize_t _same_rows_end(const Geometry *g, Py_ssize_t oh, Py_ssize_t end,
                                     Py_ssize_t *i0, Py_ssize_t *i1) noexcept nogil:
    """The end of the stretch of output rows from oh (before `end`) whose windows have the
    same kernel rows [i0, i1) inside the input as oh's (i1 <= i0: all vertical padding)."""
    return _same_taps_end(oh, end, g.sh, g.pt, g.kh, g.dh, g.H, i0, i1)


cdef inline Py_ssize_t _same_cols_end(const Geometry *g, Py_ssize_t ow, Py_ssize_t *j0,
                                     Py_ssize_t *j1) noexcept nogil:
    """The same along a row: the end of the stretch of output columns from ow whose windows
    have the same kernel columns [j0, j1) inside the input."""
    return _same_taps_end(ow, g.OW, g.sw, g.pl, g.kw, g.dw, g.W, j0, j1)


cdef inline Py_ssize_t _tile_cost_rows(Py_ssize_t m, Py_ssize_t mr) noexcept nogil:
    """The pixel rows m pixels cost in tiles of mr: a part-filled tile as at least mr/2 (with
    fewer accumulators the FMA latency shows; measured: 11x11 maps in runs of 3-4 pixels lost
    1.04x where a bound of mr/3 let them split)."""
    cdef Py_ssize_t tail = m % mr
    return m - tail + (0 if tail == 0 else (tail if tail > mr // 2 else mr // 2))


cdef Py_ssize_t _column_run_cost(const Geometry *g, Py_ssize_t mr,
                                 Py_ssize_t *runs) noexcept nogil:
    """An output row in calls per stretch of columns with the same kernel columns inside the
    input: its taps weighted by _tile_cost_rows (runs: the number of calls)."""
    cdef Py_ssize_t ow = 0, end, j0, j1, cost = 0
    runs[0] = 0
    while ow < g.OW:
        end = _same_cols_end(g, ow, &j0, &j1)
        cost += (j1 - j0 if j1 > j0 else 1) * _tile_cost_rows(end - ow, mr)
        runs[0] += 1
        ow = end
    return cost


cdef bint _column_runs_pay(const Geometry *g, Py_ssize_t mr, Py_ssize_t *cost,
                           Py_ssize_t *runs) noexcept nogil:
    """Indirect: whether a call per row and stretch of columns, skipping the taps of kernel
    columns outside the input (zeros from the horizontal padding), beats one call over whole
    rows by 1/8: the taps saved against the part-filled pixel tiles of shorter calls
    (cost, runs: _column_run_cost's).  DeepLab's d12/d18 ASPP on 33x33 maps skip 24-36% of
    their taps; a 3x3 with padding 1 never splits (one column a side)."""
    cost[0] = _column_run_cost(g, mr, runs)
    return 8 * cost[0] < 7 * g.kw * g.OW


cdef inline void _igemm_pixels(const Geometry *g, const NhwcWork *w, const nhwc_kernels *kern,
                               const float *wp, Py_ssize_t chunk, const float **a, float *c,
                               Py_ssize_t p0, Py_ssize_t m, Py_ssize_t tap0, Py_ssize_t ntaps,
                               Py_ssize_t tap_rows) noexcept nogil:
    """Band pixels [p0, p0 + m) (a: the band's table, c: its output), chunk `chunk` of the
    output channels, every group: over tap_rows runs of ntaps taps from tap0, a kernel row
    (kw taps) apart."""
    cdef Py_ssize_t grp, col0 = chunk * w.chunk * w.nr
    cdef Py_ssize_t cols = w.chunk * w.nr if col0 + w.chunk * w.nr <= g.OCg else g.OCg - col0
    for grp in range(g.groups):
        kern.igemm_nhwc(m, cols, w.ks, w.kc, w.kslice, tap0, ntaps, tap_rows, g.kw,
                        a + p0 * w.ks, grp * g.Cg if w.code == NHWC_INDIRECT else 0,
                        wp + grp * w.group_floats + col0 * (1 + w.ks * w.kc),
                        c + p0 * g.OC + grp * g.OCg + col0, g.OC)


cdef void _nhwc_unit(const Geometry *g, const NhwcWork *w, const nhwc_kernels *kern,
                     const float *x, const float *wp, float *out, const float *zero,
                     float *mine, Py_ssize_t band, Py_ssize_t chunk) noexcept nogil:
    """Band `band` of one image (x, out: that image's arrays, NHWC, or NCHW when w.nchw),
    panels of chunk `chunk`, every group."""
    cdef const float **a = <const float **>mine
    cdef Py_ssize_t oh0 = band * w.RB, m, oh, row0 = 0, ih_lo, ih_hi
    cdef Py_ssize_t run, per_row, i0, i1, ih, held, p, ow, end, j0, j1
    cdef Py_ssize_t nrows = w.RB if oh0 + w.RB <= g.OH else g.OH - oh0
    cdef const float *xs = x
    cdef float *c = out + oh0 * g.OW * g.OC
    cdef Py_ssize_t *rowmap = NULL
    if w.nchw:
        # the input rows the band's taps read, channels-last, in order; the band's output
        # channels-last
        ih_lo = oh0 * g.sh - g.pt
        ih_hi = ih_lo + (nrows - 1) * g.sh + (g.kh - 1) * g.dh + 1
        ih_lo = ih_lo if ih_lo > 0 else 0
        ih_hi = ih_hi if ih_hi < g.H else g.H
        row0 = ih_lo
        xs = mine + w.table_floats
        c = mine + w.table_floats + w.band_in
        rowmap = <Py_ssize_t *>(c + _round_up(w.RB * g.OW * g.OC, 2))
        for ih in range(ih_lo, ih_hi):
            rowmap[ih - ih_lo] = -1
        for oh in range(oh0, oh0 + nrows):
            for i0 in range(g.kh):
                ih = oh * g.sh - g.pt + i0 * g.dh
                if ih_lo <= ih < ih_hi:
                    rowmap[ih - ih_lo] = 0
        # runs of read rows, each one transpose (a channel's run is one piece of its plane);
        # none where the band's taps all fall in the padding
        held = 0
        ih = ih_lo
        while ih < ih_hi:
            if rowmap[ih - ih_lo] < 0:
                ih += 1
                continue
            run = ih
            while run < ih_hi and rowmap[run - ih_lo] >= 0:
                rowmap[run - ih_lo] = held + run - ih
                run += 1
            kern.transpose(g.C, (run - ih) * g.W, x + ih * g.W, g.H * g.W,
                           mine + w.table_floats + held * g.W * g.C, g.C)
            held += run - ih
            ih = run
    m = nrows * g.OW
    if w.code == NHWC_DEPTHWISE:
        _depthwise_band(g, w, kern, xs, row0, rowmap, wp, c, mine, oh0, nrows)
    else:
        if w.code == NHWC_ROWWISE:
            _nhwc_rows(g, xs, row0, rowmap, zero, mine + 2 * w.RB * g.OW * w.ks, oh0, nrows, a)
        else:
            _nhwc_taps(g, xs, row0, rowmap, zero, oh0, nrows, 0, g.OW, a)
        # Runs of output rows whose windows have the same kernel rows inside the input: one
        # call per run, over those kernel rows' taps only (the others read the vertical
        # padding for every pixel of the run: large dilations on small maps skip most taps).
        # With column runs, a call per row and stretch of columns, over the box of kernel
        # rows and columns inside.
        per_row = w.ks // g.kh      # taps per kernel row: kw (indirect), 1 (rowwise)
        oh = oh0
        while oh < oh0 + nrows:
            run = _same_rows_end(g, oh, oh0 + nrows, &i0, &i1)
            if i1 <= i0:        # every tap in the padding: the bias, through one zero tap
                _igemm_pixels(g, w, kern, wp, chunk, a, c, (oh - oh0) * g.OW, (run - oh) * g.OW,
                              0, 1, 1)
            elif not w.column_runs:
                _igemm_pixels(g, w, kern, wp, chunk, a, c, (oh - oh0) * g.OW, (run - oh) * g.OW,
                              i0 * per_row, (i1 - i0) * per_row, 1)
            else:
                p = (oh - oh0) * g.OW      # each row's first pixel in the band
                while p < (run - oh0) * g.OW:
                    ow = 0
                    while ow < g.OW:
                        end = _same_cols_end(g, ow, &j0, &j1)
                        if j1 <= j0:
                            _igemm_pixels(g, w, kern, wp, chunk, a, c, p + ow, end - ow, 0, 1, 1)
                        else:
                            _igemm_pixels(g, w, kern, wp, chunk, a, c, p + ow, end - ow,
                                          i0 * g.kw + j0, j1 - j0, i1 - i0)
                        ow = end
                    p += g.OW
            oh = run
    if w.nchw:
        kern.transpose(m, g.OC, c, g.OC, out + oh0 * g.OW, g.OH * g.OW)


cdef class NhwcConvolution:
    """One convolution shape prepared for an NHWC plan (the counterpart of Convolution):
    geometry and band split checked once; the packed weights (pack_weights_nhwc, bias inside)
    are referenced, not copied.  Workspaces come from a pool, reused and never zeroed; the
    zero vector padding taps read is the object's own.

    kslice: k steps per slice of the GEMM's weight panels (0 = the blocking model's, from the
    L1 size; the plan's gemm_kc).
    nchw: the arrays are NCHW; each band's input rows and output are transposed through the
    worker's scratch (no whole-image copies).
    run(x, out, threads) convolves x (N, H, W, C) into out (N, OH, OW, OC) (nchw: x (N, C, H,
    W) into out (N, OC, OH, OW)), both C-contiguous float32, without the GIL on up to
    `threads` OpenMP threads over (image, band, channel chunk) units.  Safe to call from
    several Python threads at once."""
    cdef Geometry g
    cdef int code
    cdef Py_ssize_t row_block
    cdef readonly Py_ssize_t kslice
    cdef readonly bint nchw
    cdef const nhwc_kernels *kern
    cdef readonly cnp.ndarray weights
    cdef readonly str algorithm
    cdef readonly KernelSet kernels
    cdef cnp.ndarray _zero
    cdef _WorkspacePool _pool

    def __init__(self, tuple spec, str algorithm, Py_ssize_t row_block, KernelSet kernels,
                 cnp.ndarray weights, Py_ssize_t kslice=0, bint nchw=False):
        cdef NhwcWork w
        _geometry(spec, &self.g)
        self.code = _nhwc_code(algorithm)
        self.algorithm = algorithm
        self.kernels = kernels
        self.kern = <const nhwc_kernels *>kernels.kern
        if row_block < 0:
            raise ValueError("core: row_block must be >= 0")
        self.row_block = row_block
        self.nchw = nchw
        if kslice < 0:
            raise ValueError("core: kslice must be >= 0")
        # 0: the blocking model's slice for this host's L1 and the kernel's register tile
        self.kslice = kslice if kslice > 0 else im2row_igemm_nhwc_kslice(
            self.kern.igemm_nhwc_mr, self.kern.igemm_nhwc_nr)
        _nhwc_work(&self.g, self.code, row_block, self.kern, 1, 1, nchw, &w)
        if (weights.dtype != np.float32 or weights.ndim != 1 or not weights.flags.c_contiguous
                or weights.shape[0] != w.group_floats * (1 if self.code == NHWC_DEPTHWISE
                                                         else self.g.groups)):
            raise ValueError("core: packed weights do not match the plan (pack_weights_nhwc)")
        self.weights = weights
        self._zero = np.zeros(w.zero_floats, dtype=np.float32)
        self._pool = _WorkspacePool()

    def workspace_floats(self, Py_ssize_t batch=1, int threads=1):
        """Floats one call of `batch` images on `threads` threads uses: the workers' pointer
        tables, edge windows and (nchw) transposed bands, and the zero vector."""
        cdef NhwcWork w
        cdef int nthreads = threads if threads > 0 else 1
        _nhwc_work(&self.g, self.code, self.row_block, self.kern, batch if batch > 0 else 1,
                   nthreads, self.nchw, &w)
        return _nhwc_pool_floats(&w, nthreads) + w.zero_floats

    def run(self, cnp.ndarray x not None, cnp.ndarray out not None, int threads=1):
        cdef NhwcWork w
        cdef const Geometry *g = &self.g
        cdef Py_ssize_t N, units, u, n, rest, per_image, total
        cdef int tid, nthreads = threads if threads > 0 else 1
        cdef cnp.ndarray work = None
        cdef const float *xp
        cdef const float *wp
        cdef const float *zero
        cdef float *op
        cdef float *scratch
        if x.dtype != np.float32 or out.dtype != np.float32:
            raise TypeError("core expects float32 arrays")
        if not (x.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError("core expects C-contiguous arrays")
        if not out.flags.writeable:
            raise ValueError("core: out is read-only")
        if x.ndim != 4 or out.ndim != 4 or out.shape[0] != x.shape[0]:
            raise ValueError("core: array shapes do not match the spec")
        if self.nchw and (x.shape[1] != g.C or x.shape[2] != g.H or x.shape[3] != g.W
                          or out.shape[1] != g.OC or out.shape[2] != g.OH
                          or out.shape[3] != g.OW):
            raise ValueError("core: NCHW array shapes do not match the spec")
        if not self.nchw and (x.shape[3] != g.C or x.shape[1] != g.H or x.shape[2] != g.W
                              or out.shape[3] != g.OC or out.shape[1] != g.OH
                              or out.shape[2] != g.OW):
            raise ValueError("core: NHWC array shapes do not match the spec")
        N = x.shape[0]
        if N == 0:
            return out
        _nhwc_work(g, self.code, self.row_block, self.kern, N, nthreads, self.nchw, &w)
        w.kslice = self.kslice
        total = _nhwc_pool_floats(&w, nthreads)
        work = self._pool.take(total)
        xp = <const float *>cnp.PyArray_DATA(x)
        wp = <const float *>cnp.PyArray_DATA(self.weights)
        op = <float *>cnp.PyArray_DATA(out)
        zero = <const float *>cnp.PyArray_DATA(self._zero)
        scratch = <float *>cnp.PyArray_DATA(work)
        if self.nchw:       # from the first cache line boundary (the pool's arrays are not)
            scratch += (LINE_FLOATS - (<size_t>scratch // sizeof(float)) % LINE_FLOATS) % LINE_FLOATS
        per_image = w.nbands * w.nchunks
        units = N * per_image
        try:
            with nogil, parallel(num_threads=nthreads):
                tid = threadid()
                if w.code == NHWC_DEPTHWISE:
                    _dw_forget_band(scratch + tid * w.thread_floats)
                for u in prange(units, schedule='static'):
                    n = u // per_image
                    rest = u % per_image
                    _nhwc_unit(g, &w, self.kern, xp + n * g.H * g.W * g.C, wp,
                               op + n * g.OH * g.OW * g.OC, zero,
                               scratch + tid * w.thread_floats, rest // w.nchunks,
                               rest % w.nchunks)
        finally:
            self._pool.give(work)
        return out


cdef inline void _dw_block_geometry(const Geometry *g, Py_ssize_t cb, Geometry *gb) noexcept nogil:
    """A block of cb channels of a depthwise layer (channel multiplier 1) as a depthwise layer
    of its own: the same planes and windows, cb channels."""
    gb[0] = g[0]
    gb.C = cb
    gb.OC = cb
    gb.groups = cb
    gb.Cg = 1
    gb.OCg = 1


cdef int _dw_block_work(const Geometry *g, const Schedule *s, NhwcWork *w) except -1:
    """The band work of the channel-blocked depthwise path (_dw_blocked): each block of s.CC
    channels runs as an NHWC depthwise layer on NCHW arrays, s.RB output rows per band."""
    cdef Geometry gb
    _dw_block_geometry(g, s.CC, &gb)
    return _nhwc_work(&gb, NHWC_DEPTHWISE, s.RB, NULL, 1, 1, True, w)


cdef inline Py_ssize_t _dw_block_worker_floats(const NhwcWork *w) noexcept nogil:
    """One worker's scratch on the channel-blocked depthwise path: its band work (from a cache
    line on) and a line of slack to align."""
    return w.thread_floats + LINE_FLOATS


cdef inline float *_line_aligned(float *p) noexcept nogil:
    return p + (LINE_FLOATS - (<size_t>p // sizeof(float)) % LINE_FLOATS) % LINE_FLOATS


cdef void _depthwise_block(const Geometry *g, const Schedule *s, const NhwcWork *w,
                           const im2row_kernels *kern, const float *x, const float *wblocks,
                           float *out, float *mine, Py_ssize_t b, Py_ssize_t band) noexcept nogil:
    """NCHW depthwise by channel blocks (_dw_blocked), for callers of the NCHW core: band
    `band` of channels [b*CC, b*CC + cb) of one image, run by the NHWC depthwise path (its
    input rows transposed channels-last in one call, the band computed across the channels
    (_depthwise_band), its output transposed back in one call).  mine: the worker's scratch,
    line-aligned; wblocks: pack_depthwise_blocks' bias row and kh*kw tap rows of cb weights per block."""
    cdef Geometry gb
    cdef Py_ssize_t c0 = b * s.CC
    _dw_block_geometry(g, s.CC if c0 + s.CC <= g.C else g.C - c0, &gb)
    _nhwc_unit(&gb, w, <const nhwc_kernels *>kern, x + c0 * g.H * g.W,
               wblocks + c0 * (1 + g.kh * g.kw), out + c0 * g.OH * g.OW, NULL, mine, band, 0)
