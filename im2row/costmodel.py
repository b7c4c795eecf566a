"""Predicted run time of a plan: FFTW's ESTIMATE beside the tuner's MEASURE.

default_plan ranks its candidates (within the workspace budget) by predict().  A prediction
is built from the host's parameters and the shape, never from tables of measured layers:

- the host (Host, measured once per process and kernel ISA, a few tens of ms, or read from
  the plan cache where `im2row tune` stored it, so that processes agree): our GEMM's
  sustained flop rate on a cache-resident problem (the peak the tile model scales), copy
  bandwidth with both ends in L2, in L3 and in memory, the cache sizes, and the fixed cost of
  one call through the Python layer;
- the GEMM's register tiles (kernels/x86/f32-gemm-packed-*.c): whole vectors of columns run
  the n-vectorised tile at full rate; the n % VW tail and maps narrower than a vector run the
  m-vectorised tile, whose rate is bound by FMA latency (too few accumulators) or by loads
  (one broadcast per column) as its header describes; rows pad to the tile height; each k
  slice reloads the C tile;
- operands re-read per GEMM call (the packed weights: once per call, from the level their
  size fits in; the patch matrix: once per block of MC weight rows);
- the buffer fill: floats written by the algorithm's gather (whole patch matrix, only the new
  taps, padded rows once, stride phases), at the copy rate, slower for strided gathers (only
  strides 1 and 2 have division-free bounds and vector paths);
- the direct depthwise kernel: vectorised along output width, at a fraction of the FMA rate
  that its path's loads allow (kernels/x86/f32-dwconv-*.c);
- the channels-last GEMM (indirect and rowwise NHWC plans, kernels/x86/f32-igemm-nhwc-*.c):
  pixel tiles of MR with exact-size tails, weights streamed again per band of output rows,
  the band's pointer table, and for an NCHW caller the band transposes (not the NHWC
  depthwise kernel: covers());
- threads: the work divided over the units the core splits (images, column classes, output
  channels), plus a synchronisation per band for shared buffers.

The prediction is one image's time times the batch.  Its error against measurement is
reported by benchmarks/bench_layers.py (column "pred ms", summary "model err").
"""
from __future__ import annotations

import functools
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import _core, hwinfo
from .spec import ConvSpec

# -- the kernels' documented structure ----------------------------------------------------------
FMA_LATENCY_X_PORTS = 8   # accumulators needed to keep two FMA pipes of latency 4 busy
N_TILE_ROWS = {"avx512": 8, "avx2": 4, "neon": 4, "scalar": 4}   # NV_ROWS of the n-tile
M_TILE_MAX_COLS = {"avx512": 12, "avx2": 6, "neon": 6, "scalar": 4}
N_TILE_VECTORS = 3        # vectors of columns of the widest n-vectorised tile
GEMM_KC = 512             # k slice: the C tile is loaded and stored once per slice
GEMM_MC = 256             # weight rows per block: the patch matrix streams once per block
C_TILE_OPS = 2            # a load and a store per accumulator per k slice
GATHER_SLOWDOWN = {1: 1.0, 2: 2.0}   # per written float vs a copy; other strides: scalar
SCALAR_GATHER_SLOWDOWN = 4.0
# f32-transpose (8 x 8 / 4 x 4 register blocks, masked edges): each float is read in a line
# and written in a line segment of a block's width, a strided store per 8 (4) floats.
TRANSPOSE_SLOWDOWN = 1.5
# Each gathered row segment pays its bounds prologue and a vector tail: about a vector
# loop's worth of floats (kernels/include/gather-common.h gather_interval).
GATHER_SEGMENT_FLOATS = 32
# Depthwise kernel paths (FMA rate relative to the GEMM's):
DW_ROWS = 4        # output rows per block sharing each loaded input vector
DW_POINTER = 0.5   # other stride 1/2 cases: bound by L2->L1 traffic (two fresh rows per row)
DW_GENERIC = 0.25  # taps in a runtime loop
# Stride 2 on the plane itself (f32-dwconv-s2): per input row and vector of outputs, kw
# permutes (and kw - 2 masked ones) beside kw * kh / 2 FMAs; measured at 28-33% of peak on
# 3x3 stride 2 over 75x75-150x150 maps (Zen 4, 2026-12-08).
DW_PLANE_S2 = 0.4
DW_PLANE_S2_ROW_FMAS = 4   # its fixed cost per output row and kernel row (DW_ROW_FMAS)
DW_CHANNELS = 0.25  # channels-last kernel: an input load per FMA, measured at 25-30% of peak
# ... on runs of pixels under 5x5/7x7 stride-1 kernels, whose rows share input vectors
# between eight pixels (0.4 loads per FMA): measured at about twice that.
DW_CHANNEL_ROWS = 0.5
# An input load per FMA from rows that outgrow the L1: the time grows by about this much per
# L1 of rows under one output row and weights of the block beyond 3/4 of it (3x3 on 56x56 and
# 75x75 maps, blocks of 16-144 channels: +20% to +110%; 7x7 on 7x7, 96-256 channels: +60%;
# Zen 4, 2026-12-08).
DW_L1_SPILL = 0.4
# The planar kernel's fixed cost per output row of a plane and kernel row (row setup, edge
# vectors, the taps' pointers), in vector FMAs: it dominates maps of 28 x 28 and less (about
# 25 cycles a row at 3x3 and 55 at 7x7 on 7x7-14x14 maps, Zen 4, 2026-12-08).
DW_ROW_FMAS = 8
# The channel-blocked path's fixed costs, in vector FMAs: per kernel call (a row's run of
# columns, an edge column's run of rows) of every block, and per tap pointer of a band's
# tables.  768 channels of 7x7 on a 7x7 map ran 0.12 ms slower in 48 blocks than in one when
# every block built its tables (2401 pointers and 13 calls a block); 960 of 3x3 on 7x7,
# 0.03 ms in 60 blocks (Zen 4, 2026-12-08).
DW_CALL_FMAS = 100
DW_POINTER_FMAS = 4
# Threads sharing one buffer meet at a barrier per band; a woken thread's scheduling delay
# (tens of microseconds, far more on a loaded machine) is about 20 calls' fixed overhead.
BAND_SYNC_CALLS = 20


@dataclass(frozen=True)
class Host:
    """What the model knows about the machine (one core, one kernel ISA)."""

    isa: str
    vector: int            # floats per vector: the GEMM's column unit and row panel
    gemm_flops: float      # flop/s of the plan's GEMM at full tile efficiency
    copy_l2: float         # bytes/s (read + write) copying within L2
    copy_l3: float         # ... within L3
    copy_mem: float        # ... from and to memory
    l1: int
    l2: int
    l3: int
    call_s: float          # fixed seconds of one Conv2d call (Python, checks, dispatch)

    def bandwidth(self, nbytes: float) -> float:
        """bytes/s reading a working set of nbytes (copy rate: read and write counted)."""
        if nbytes <= self.l2:
            return self.copy_l2
        if nbytes <= self.l3:
            return self.copy_l3
        return self.copy_mem


def cache_sizes() -> dict:
    """{'l1', 'l2', 'l3'}: bytes of cpu0's L1 data cache, L2 and L3 (hwinfo.cache_sizes, the
    one place that reads them).  A machine with no L3 known gets the L2 there: past it is
    memory."""
    sizes = hwinfo.cache_sizes()
    l2 = int(sizes.get("l2") or 256 << 10)
    return {"l1": int(sizes.get("l1d") or 32 << 10), "l2": l2,
            "l3": max(int(sizes.get("l3") or 0), l2)}


# -- measuring the host (once per process and ISA) ---------------------------------------------

def _best_of(fn, repeats: int, inner: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.thread_time()
        for _ in range(inner):
            fn()
        best = min(best, (time.thread_time() - start) / inner)
    return max(best, 1e-9)


def _copy_rate(nbytes: int, repeats: int) -> float:
    src = np.ones(max(nbytes // 4, 1024), np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    inner = max(1, (4 << 20) // src.nbytes)
    return 2 * src.nbytes / _best_of(lambda: np.copyto(dst, src), repeats, inner)


MAX_PROBE_BYTES = 64 << 20


@functools.lru_cache(maxsize=1)
def _memory_host() -> tuple:
    sizes = cache_sizes()
    # Memory: two arrays of the L3's size each (the pair cannot stay in it), copied twice;
    # at most MAX_PROBE_BYTES each, so a server's 256 MB L3 costs no gigabyte of probing.
    mem = _copy_rate(min(sizes["l3"], MAX_PROBE_BYTES), 2)
    l3 = max(_copy_rate(min(sizes["l3"] // 4, MAX_PROBE_BYTES // 4), 3), mem)
    l2 = max(_copy_rate(sizes["l2"] // 4, 5), l3)   # a nearer level is never slower: noise
    return sizes, l2, l3, mem


CALIBRATION = ConvSpec(1, 256, 16, 16, 256, 1, 1)   # M = N = K = 256: in L2, whole vectors


def _measure_gemm_and_call(isa: str, gemm: str) -> tuple:
    from ._api import Conv2d  # the runtime measures through the public layer
    from .plan import Plan

    rng = np.random.default_rng(0)
    spec = CALIBRATION
    x = rng.standard_normal(spec.input_shape, dtype=np.float32)
    w = rng.standard_normal(spec.weight_shape, dtype=np.float32)
    layer = Conv2d.from_spec(spec, w, None, plan=Plan("pointwise", gemm=gemm, isa=isa),
                             threads=1)
    out = np.empty(spec.output_shape, np.float32)
    layer(x, out=out)
    # Samples of ~8 calls (a few ms), as long as a benchmark's: one lucky call sets no rate.
    seconds = _best_of(lambda: layer(x, out=out), 5, 8)
    tiny = ConvSpec(1, 1, 4, 4, 1, 1, 1)
    small = Conv2d.from_spec(tiny, np.ones(tiny.weight_shape, np.float32), None,
                             plan=Plan("pointwise", gemm=gemm, isa=isa), threads=1)
    xs = np.ones(tiny.input_shape, np.float32)
    outs = np.empty(tiny.output_shape, np.float32)
    small(xs, out=outs)
    call = _best_of(lambda: small(xs, out=outs), 5, 50)
    return seconds, call


_hosts: dict = {}
_hosts_lock = threading.Lock()


def host(isa: str | None = None) -> Host:
    """The host for a kernel ISA (default: the active one), cached per process: the rates
    stored in the plan cache for this machine (by `im2row tune`: see record_host), else
    measured now."""
    isa = isa or hwinfo.get_isa()
    with _hosts_lock:
        found = _hosts.get(isa)
    if found is not None:
        return found
    made = _stored_host(isa) or measure_host(isa)
    with _hosts_lock:
        return _hosts.setdefault(isa, made)


def host_rates(h: Host) -> dict:
    """The measured fields of a Host (what the plan cache stores: wisdom.HOST_FIELDS)."""
    return {"gemm_flops": h.gemm_flops, "copy_l2": h.copy_l2, "copy_l3": h.copy_l3,
            "copy_mem": h.copy_mem, "call_s": h.call_s}


def _stored_host(isa: str) -> Host | None:
    """The Host from rates stored for this machine (its caches and vector width as detected
    now: the machine identity already pins the CPU)."""
    from . import wisdom  # the plan cache imports the planner, which imports this lazily

    rates = wisdom.store().host(isa)
    if rates is None:
        return None
    sizes = cache_sizes()
    return Host(isa, hwinfo.kernel_set(isa).gemm_mr, rates["gemm_flops"], rates["copy_l2"],
                rates["copy_l3"], rates["copy_mem"], sizes["l1"], sizes["l2"], sizes["l3"],
                rates["call_s"])


def measure_host(isa: str) -> Host:
    """The host measured now: copy rates per cache level, our GEMM's rate, the call cost."""
    gemm = "sgemm" if isa == "scalar" else "packed"
    sizes, l2, l3, mem = _memory_host()
    seconds, call = _measure_gemm_and_call(isa, gemm)
    vector = hwinfo.kernel_set(isa).gemm_mr
    probe = Host(isa, vector, 1.0, l2, l3, mem, sizes["l1"], sizes["l2"], sizes["l3"], 0.0)
    # The calibration's own tile efficiency and operand streaming, so that gemm_flops is the
    # full-tile arithmetic rate.
    cal = CALIBRATION
    unit, near, far, _ = _gemm_terms(probe, cal.out_channels, cal.height * cal.width,
                                     cal.in_channels, 1, 4.0 * cal.in_channels * cal.height * cal.width)
    arithmetic = max(seconds - call - near - far, seconds * 0.5)
    return Host(isa, vector, unit / arithmetic, l2, l3, mem, sizes["l1"], sizes["l2"],
                sizes["l3"], call)


# -- the model -----------------------------------------------------------------------------------

def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _m_tile_columns(h: Host, n: int, strided: bool) -> int:
    """Columns of n the m-vectorised tiles take: the n % vector tail, or every column when C's
    columns are strided (the n-vectorised tiles take the whole vectors)."""
    return n if strided else n % h.vector


def _column_time(h: Host, m: int, n: int, strided: bool = False, a_block: float = 0.0) -> float:
    """Relative time of the GEMM's register tiles over n columns of m rows (1 per
    column-row at full rate).  Output columns that are not contiguous (strided: C's column
    step > 1) go through the m-vectorised tile only.  a_block: bytes of the A block the tiles
    read (past the L1, the m-vectorised tile waits for it: see below)."""
    vw = h.vector
    rows = N_TILE_ROWS.get(h.isa, 4)
    tail = _m_tile_columns(h, n, strided)
    t = (n - tail) * _round_up(m, rows)
    if tail:
        # m-vectorised strips of at most M_TILE_MAX_COLS columns; P = 4 panels for 1-2
        # columns, else 2; rows pad to whole panels.
        cols = M_TILE_MAX_COLS.get(h.isa, 4)
        # Each k step of a strip loads a vector of A per panel for only nc FMAs per vector:
        # out of L1 the A block streams from its level at a vector per nc FMAs (the n-tile
        # reads a float of A per vector of columns, which no level slows).
        streamed = a_block > h.l1
        left = tail
        while left:
            nc = min(left, cols)
            panels = 4 if nc <= 2 else 2
            accumulators = panels * nc
            latency = min(1.0, accumulators / FMA_LATENCY_X_PORTS)
            loads = min(1.0, accumulators / (panels + nc))
            rate = min(latency, loads)
            if streamed:
                rate = min(rate, nc * h.bandwidth(a_block) / (2.0 * h.gemm_flops))
            t += nc * _round_up(m, vw) / rate
            left -= nc
    return t
def _strips(h: Host, n: int, strided: bool) -> int:
    """Column strips of one GEMM call: n-vectorised strips of up to N_TILE_VECTORS vectors,
    then m-vectorised strips of up to M_TILE_MAX_COLS columns (all of them when strided)."""
    tail = _m_tile_columns(h, n, strided)
    whole = (n - tail) // h.vector
    return -(-whole // N_TILE_VECTORS) + -(-tail // M_TILE_MAX_COLS.get(h.isa, 4))


@functools.lru_cache(maxsize=4096)
def _panel_columns(isa: str, l1: int, l2: int, l3: int, m: int, n: int, k: int) -> int:
    """Columns per B panel (nc) of the packed GEMM's blocking for an m x n x k product, from
    the kernels' own blocking model for caches of these sizes (the detected ways and sharing);
    all n where the ISA has no packed GEMM (the scalar oracle's sgemm)."""
    if isa not in hwinfo.available_isas():
        isa = hwinfo.get_isa()
    caches = dict(_core.cache_info(), l1d=l1, l2=l2, l3=l3)
    try:
        return min(n, _core.gemm_blocking(hwinfo.kernel_set(isa), m, n, k, caches=caches)["nc"])
    except ValueError:
        return n


def _gemm_terms(h: Host, m: int, n: int, k: int, calls: int, b_set: float,
                strided: bool = False) -> tuple:
    """(arithmetic, weights re-read from L2, weights from beyond L2, patch reads) in seconds
    of calls GEMMs of m x n x k.

    Arithmetic: register tiles with C tile reloads per k slice.  Weights: B is not packed,
    so the A block (up to MC x KC, kept in L2) is read again for every column strip: narrow
    GEMMs (few columns per call) re-read the weights per few columns (from the L1 where the
    block fits there: free).  Weights larger than the L2 come from L3 or memory once per B
    panel of nc columns (the driver's outer loop); the panel's other strips re-read each
    block from L2.  The patch rows are read once per MC block of rows, from the level their
    working set fits in."""
    slices = -(-k // GEMM_KC)
    k_eff = k + C_TILE_OPS * slices
    a_bytes = 4.0 * m * k
    a_block = min(a_bytes, 4.0 * GEMM_MC * GEMM_KC)
    compute = 2.0 * _column_time(h, m, n, strided, a_block) * k_eff * calls / h.gemm_flops
    # The m-vectorised tiles (the n % vector tail; every column when strided) store C
    # transposed, a float at a time: vector-width times C_TILE_OPS per accumulator and slice.
    # It dominates shallow GEMMs: incremental classes of 1-D convolutions (k = 2-3, strided)
    # measured 6-10x over a model without it, which then picked them for 2 threads.
    compute += (2.0 * _m_tile_columns(h, n, strided) * _round_up(m, h.vector) * (h.vector - 1) * C_TILE_OPS
                * slices * calls / h.gemm_flops)
    # Rates count bytes moved (a copy's read and write): a read-only operand moves its size.
    strips = _strips(h, n, strided)
    far = 0.0
    if a_bytes > h.l2:
        panels = min(-(-n // _panel_columns(h.isa, h.l1, h.l2, h.l3, m, n, k)), strips)
        far = calls * panels * a_bytes / h.bandwidth(a_bytes)
        strips -= panels
    # (a block within the L1 is re-read from there, at the tiles' own load rate)
    near = 0.0 if a_block <= h.l1 else calls * strips * a_bytes / h.bandwidth(a_block)
    b_reads = calls * (-(-m // GEMM_MC)) * 4.0 * k * n / h.bandwidth(b_set + a_block)
    return compute, near, far, b_reads


def _gemm_seconds(h: Host, m: int, n: int, k: int, calls: int, b_set: float,
                  strided: bool = False) -> float:
    if m <= 0 or n <= 0 or k <= 0 or calls <= 0:
        return 0.0
    compute, near, far, b_reads = _gemm_terms(h, m, n, k, calls, b_set, strided)
    # Nothing fetches the packed weights ahead of the tiles that use them: the wait for a
    # block from L3 or memory adds to the arithmetic, and so do the strips' re-reads from L2
    # (the calibration in measure_host counts them the same way).  The patch rows are read
    # ahead (the strip copy prefetches them): they overlap.
    return max(compute + near + far, b_reads)


def _gather_seconds(h: Host, floats: float, segments: float, stride: int, source: float,
                    dest: float) -> float:
    """floats written in `segments` row pieces, read from a working set of `source` bytes
    and written into one of `dest` bytes (each side at its level's rate; strided gathers
    spend more on the writing side's shuffles)."""
    slow = GATHER_SLOWDOWN.get(stride, SCALAR_GATHER_SLOWDOWN)
    moved = 4.0 * (floats + segments * GATHER_SEGMENT_FLOATS)
    return moved / h.bandwidth(source) + moved * slow / h.bandwidth(dest)


def _shift_efficiency(spec: ConvSpec) -> float:
    """The depthwise shift path: per 16 columns and block of DW_ROWS output rows, taps x rows
    FMAs against (kw - 1) shifts per input row read."""
    fmas = spec.kernel_h * spec.kernel_w * DW_ROWS
    shifts = (spec.kernel_w - 1) * (DW_ROWS + spec.kernel_h - 1)
    return fmas / (fmas + shifts)


def _band_span(spec: ConvSpec, rows: int, sh: int, dh: int) -> int:
    return (rows - 1) * sh + (spec.kernel_h - 1) * dh + 1


def _phase_width(spec: ConvSpec, sw: int, dw: int) -> int:
    return spec.out_width + ((spec.kernel_w - 1) * dw) // sw


@functools.lru_cache(maxsize=None)
def _nhwc_tile(isa: str) -> dict:
    """The channels-last GEMM tile of `isa`'s kernels; of the active ones where this build or
    CPU lacks that ISA (a Host described for another machine)."""
    if isa not in hwinfo.available_isas():
        isa = hwinfo.get_isa()
    return _core.igemm_nhwc_tile(hwinfo.kernel_set(isa))


def _dw_blocked_seconds(spec: ConvSpec, plan, h: Host, blocks: int, stream: float) -> tuple:
    """(seconds, parallel units, bands) of the channel-blocked depthwise path (the NHWC
    depthwise kernel on blocks of channels, band by band): vectorised across channels, padding
    taps skipped; an input vector loaded per FMA (slower once the rows under an output row
    outgrow the L1), fewer on the runs under 5x5/7x7 stride-1 kernels; each band's input rows
    transposed in (rows that bands share, again) and its output back; per block the kernel
    calls of _depthwise_band, per band its tap pointers."""
    from .plan import effective_axes

    sh, sw, dh, dw = effective_axes(spec)
    oh, ow = spec.out_height, spec.out_width
    rows = plan.row_block if 0 < plan.row_block < oh else oh
    bands = -(-oh // rows)
    nblocks = -(-spec.in_channels // blocks)
    span = min(_band_span(spec, rows, sh, dh), spec.height)
    band_bytes = 4.0 * blocks * (span * spec.width + rows * ow)
    moved = 4.0 * (spec.in_channels * bands * span * spec.width + spec.out_channels * oh * ow)
    fill = moved * TRANSPOSE_SLOWDOWN / h.bandwidth(band_bytes)
    lanes = blocks / _round_up(blocks, h.vector)
    taps = _dw_taps(spec.height, spec.width, oh, ow, spec.kernel_h, spec.kernel_w, sh, sw, dh,
                    dw, spec.pad_top, spec.pad_left, rows)
    # what one output row's taps read: the rows under it, and the block's weights, each
    # loaded once per call (for its pixels: few on small maps, where every pixel is an edge)
    per_call = oh * ow / max(taps["calls"], 1)
    under_row = 4.0 * blocks * (_band_span(spec, 1, sh, dh) * spec.width
                                + spec.kernel_h * spec.kernel_w / per_call)
    spill = 1.0 + DW_L1_SPILL * max(0.0, under_row / h.l1 - 0.75)
    row_runs = (spec.kernel_h == spec.kernel_w and spec.kernel_h in (5, 7) and sw == dw == 1)
    row_fmas = taps["interior"] if row_runs else 0.0
    tap_fmas = taps["fmas"] - row_fmas
    vector_fmas = spec.in_channels / (h.vector * lanes)
    compute = 2.0 * h.vector * vector_fmas * (
        tap_fmas * spill / DW_CHANNELS + row_fmas / DW_CHANNEL_ROWS) / h.gemm_flops
    # the tables are built once per band (again for a last, narrower block) and kept for
    # the blocks after it; every block makes every call
    tables = 1 if spec.in_channels % blocks == 0 else 2
    fixed = (nblocks * taps["calls"] * DW_CALL_FMAS
             + min(tables, nblocks) * taps["pointers"] * DW_POINTER_FMAS)
    return (max(compute, stream) + fill + fixed * 2.0 * h.vector / h.gemm_flops,
            nblocks * bands, 1)


@functools.lru_cache(maxsize=4096)
def _dw_taps(height: int, width: int, out_height: int, out_width: int, kh: int, kw: int,
             sh: int, sw: int, dh: int, dw: int, pad_top: int, pad_left: int,
             band: int) -> dict:
    """What _depthwise_band does for one channel of a layer in bands of `band` output rows:
    fmas (tap FMAs, padding taps skipped), interior (those of the columns whose taps all lie
    in the row: runs of pixels), calls (kernel calls: a run per row that has interior columns,
    a run per edge column and stretch of rows with the same kernel rows inside) and pointers
    (tap pointers written)."""
    def inside(n, size, k, stride, dil, pad):
        top = n * stride - pad
        return tuple(i for i in range(k) if 0 <= top + i * dil < size)

    row_sets = [inside(y, height, kh, sh, dh, pad_top) for y in range(out_height)]
    row_taps = [len(rows) for rows in row_sets]
    col_taps = [len(inside(x, width, kw, sw, dw, pad_left)) for x in range(out_width)]
    interior = sum(1 for c in col_taps if c == kw)
    edges = out_width - interior
    calls = pointers = 0
    for oh0 in range(0, out_height, band):
        stretch = row_sets[oh0:oh0 + band]
        runs = 1 + sum(1 for a, b in zip(stretch, stretch[1:]) if a != b)
        calls += (len(stretch) if interior else 0) + edges * runs
        pointers += ((len(stretch) if interior else 0) + edges * len(stretch)) * kh * kw
    return {"fmas": float(sum(row_taps) * sum(col_taps)),
            "interior": float(sum(row_taps) * interior * kw),
            "calls": calls, "pointers": pointers}


def _dw_reads_plane(spec: ConvSpec) -> bool:
    """Planar depthwise run on the input plane itself (f32-dwconv-s2): the core then needs no
    scratch for it (its _dw_reads_plane, read through the scratch size)."""
    from .plan import core_spec

    return _core.scratch_floats(core_spec(spec), "depthwise", 1) == 0


def _inside_row_share(spec: ConvSpec) -> float:
    """The share of (output row, kernel row) pairs whose input row lies inside the input (a
    window wholly in the vertical padding still costs one kernel row: its bias)."""
    from .plan import effective_axes

    sh, _, dh, _ = effective_axes(spec)
    return _inside_rows(spec.height, spec.out_height, spec.kernel_h, sh, dh, spec.pad_top)


@functools.lru_cache(maxsize=4096)
def _inside_rows(height: int, out_height: int, kernel_h: int, sh: int, dh: int,
                 pad_top: int) -> float:
    inside = 0
    for oh in range(out_height):
        top = oh * sh - pad_top
        rows = sum(1 for i in range(kernel_h) if 0 <= top + i * dh < height)
        inside += max(rows, 1)
    return inside / (out_height * kernel_h)


def _nhwc_image_seconds(spec: ConvSpec, plan, h: Host) -> tuple:
    """(seconds, parallel units, bands) of a channels-last GEMM plan (indirect or rowwise):
    pixel tiles of MR x NR output channels over every k slice of every panel, the weights
    streamed again by every band, the band's pointer table written, and for an NCHW caller
    each band's input rows transposed in and its output rows transposed out."""
    from .plan import core_spec, effective_axes, nhwc_row_block

    tile = _nhwc_tile(h.isa)
    g, cg, ocg = spec.groups, spec.group_in_channels, spec.group_out_channels
    oh, ow = spec.out_height, spec.out_width
    k = cg * spec.kernel_h * spec.kernel_w
    rows = nhwc_row_block(spec, plan)
    bands = -(-oh // rows)
    # a band's last tile has its own pixel count (compiled variants of 1..MR pixels), bound
    # by FMA latency below FMA_LATENCY_X_PORTS accumulators (two vectors per pixel)
    tail = rows * ow % tile["mr"]
    pixels = rows * ow - tail
    if tail:
        pixels += tail / min(1.0, 2.0 * tail / FMA_LATENCY_X_PORTS)
    runs, share = (_core.indirect_column_runs(core_spec(spec), tile["mr"])
                   if plan.algorithm == "indirect" else (0, 1.0))
    if runs:
        # a call per row and stretch of columns, over the kernel columns inside the input
        # only: the row's taps as the driver weighs them (part-filled tiles included).  Its
        # calls stream the weights again, mostly under the FMAs; without a term for that the
        # model under-predicts DeepLab's d18/d12 ASPP by 10-25% (session 14)
        pixels = rows * ow * share
    slices = -(-k // tile["kslice"])
    # kernel rows that read only the vertical padding are skipped (the core's row runs)
    compute = (2.0 * bands * pixels * _round_up(ocg, h.vector) * g * (k + C_TILE_OPS * slices)
               * _inside_row_share(spec) / h.gemm_flops)
    # every band streams all the weights again, from beyond the L2 where they outgrow it
    # (as _gemm_seconds: nothing fetches them ahead of the tiles)
    weights = 4.0 * spec.out_channels * k
    stream = bands * weights / h.bandwidth(weights)
    gemm = compute + stream if weights > h.l2 else max(compute, stream)
    taps = spec.kernel_h if plan.algorithm == "rowwise" else spec.kernel_h * spec.kernel_w
    pointers = 8.0 * oh * ow * taps / h.copy_l2
    moved = 0.0
    if spec.layout != "NHWC":
        sh, _, dh, _ = effective_axes(spec)
        # the rows the band's taps read (a dilated kernel's rows between its taps are not)
        span = min(_band_span(spec, rows, sh, dh), spec.height, spec.kernel_h * rows)
        band_in = 4.0 * span * spec.width * spec.in_channels
        moved = (bands * band_in + 4.0 * spec.out_channels * oh * ow) * TRANSPOSE_SLOWDOWN
        moved /= h.bandwidth(band_in + 4.0 * rows * ow * spec.out_channels)
    return gemm + pointers + moved, bands, bands


def _image_seconds(spec: ConvSpec, plan, h: Host) -> tuple:
    """(seconds for one image on one thread, parallel units, bands) of a plan."""
    from .plan import core_spec, effective_axes

    if plan.layout == "NHWC":
        return _nhwc_image_seconds(spec, plan, h)
    sh, sw, dh, dw = effective_axes(spec)

    g, cg, ocg = spec.groups, spec.group_in_channels, spec.group_out_channels
    oh, ow = spec.out_height, spec.out_width
    k = cg * spec.kernel_h * spec.kernel_w
    in_bytes = 4.0 * spec.in_channels * spec.height * spec.width
    out_bytes = 4.0 * spec.out_channels * oh * ow
    stream = (in_bytes + out_bytes) / h.bandwidth(in_bytes + out_bytes)
    algo = plan.algorithm
    if algo == "depthwise":
        span = _band_span(spec, oh, sh, dh)
        plane = sw * span * _phase_width(spec, sw, dw)
        fill = _gather_seconds(h, spec.in_channels * plane, spec.in_channels * sw * span,
                               sw, in_bytes, 4.0 * plane)
        small = spec.kernel_h in (3, 5, 7) and spec.kernel_w == spec.kernel_h
        # (the shift path is the AVX-512 kernel's; the AVX2 and NEON ones load per tap column)
        unit = (_shift_efficiency(spec) if small and sh == sw == 1 and dh == dw == 1
                and h.isa == "avx512" else DW_POINTER
                if small and sw <= 2 else DW_GENERIC)
        lanes = ow / _round_up(ow, h.vector)
        fmas = spec.out_channels * oh * ow * spec.kernel_h * spec.kernel_w
        from .plan import depthwise_blocks
        blocks = depthwise_blocks(spec, plan)
        if blocks:
            return _dw_blocked_seconds(spec, plan, h, blocks, stream)
        row_fmas = DW_ROW_FMAS
        if _dw_reads_plane(spec):
            # f32-dwconv-s2: the phase split in registers, kw permutes per input row and
            # vector of outputs instead of a copy of the plane; no phase rows to set up
            fill, unit, row_fmas = 0.0, DW_PLANE_S2, DW_PLANE_S2_ROW_FMAS
        compute = 2.0 * fmas / (h.gemm_flops * unit * lanes)
        rows = spec.out_channels * oh * spec.kernel_h * row_fmas * 2.0 * h.vector / h.gemm_flops
        return max(compute + rows, stream) + fill, spec.groups, 1
    if algo == "pointwise":
        view = (sh == sw == 1 and not spec.has_padding)
        b_bytes = 4.0 * cg * oh * ow
        fill = 0.0 if view else _gather_seconds(h, cg * g * oh * ow, cg * g * oh,
                                                sw, in_bytes, b_bytes)
        gemm = _gemm_seconds(h, ocg, oh * ow, cg, g, b_bytes)
        return max(gemm, stream) + fill, g, 1
    if algo == "classic":
        # in passes of per_pass input channels: the same taps copied, a pass's buffer, one
        # GEMM per pass adding into the output
        per_pass = plan.channel_block if 0 < plan.channel_block < cg else cg
        passes = -(-cg // per_pass)
        patch = float(k * oh * ow)
        buffer = 4.0 * per_pass * spec.kernel_h * spec.kernel_w * oh * ow
        fill = _gather_seconds(h, patch * g, k * oh * g, sw, in_bytes, buffer)
        gemm = _gemm_seconds(h, ocg, oh * ow, per_pass * spec.kernel_h * spec.kernel_w,
                             g * passes, buffer)
        # every pass after the first reads and writes the group's output again
        group_out = 4.0 * ocg * oh * ow
        again = (passes - 1) * g * 2.0 * group_out / h.bandwidth(group_out)
        return max(gemm, stream) + fill + again, g, 1
    if algo == "rowwise":
        rb = plan.row_block or oh
        bands = -(-oh // rb)
        span = _band_span(spec, min(rb, oh), sh, dh)
        band_floats = cg * span * sw * _phase_width(spec, sw, dw)
        fill = _gather_seconds(h, band_floats * bands * g, cg * span * sw * bands * g,
                               sw, in_bytes, 4.0 * band_floats)
        units = bands
        if sw == 1 and spec.pad_left == 0 and spec.pad_right == 0:
            fill = 0.0      # the core points the GEMM at the input rows (_rows_in_place)
            # and, with fewer bands than threads, splits the width in 16-column pieces
            units = max(bands, ow // 16)
        pointers = 16.0 * k * oh * g / h.copy_l2
        gemm = _gemm_seconds(h, ocg, ow, k, oh * g, 4.0 * band_floats)
        return max(gemm, stream) + fill + pointers, g * units, bands * g
    # incremental
    info = _core.schedule_info(core_spec(spec), max(plan.column_block, 1), plan.channel_block,
                               plan.row_block, plan.gemm == "packed")
    classes, windows, rb = info["classes"], info["windows"], info["rows_per_band"]
    bands = -(-oh // rb)
    passes = -(-ocg // info["channels_per_pass"])
    n = rb * windows
    calls = classes * bands * passes * g
    # Every band fills its whole span (the kh - 1 dilated halo rows again): info["rows"]
    # buffer rows per band and class.
    filled_rows = info["rows"] * bands
    written = cg * spec.kernel_w * windows * classes * filled_rows * g
    buffer = 4.0 * k * windows * info["rows"]
    fill = _gather_seconds(h, written, cg * spec.kernel_w * classes * filled_rows * g,
                           sw, in_bytes, buffer)
    # Several classes writing the output directly interleave their columns (step = classes).
    gemm = _gemm_seconds(h, info["channels_per_pass"], n, k, calls, buffer,
                         strided=classes > 1 and info["direct"])
    scatter = 0.0
    if classes > 1 and not info["direct"]:
        scatter = 2 * out_bytes / h.bandwidth(out_bytes)
    units = classes * g
    return max(gemm, stream) + fill + scatter, units, bands * classes * g


# The channels-last plans the model describes (the NHWC depthwise kernel it does not).
NHWC_GEMM_ALGORITHMS = ("indirect", "rowwise")


def covers(plan) -> bool:
    """Whether predict() describes this plan: every NCHW plan, NHWC GEMM plans."""
    return plan.layout == "NCHW" or plan.algorithm in NHWC_GEMM_ALGORITHMS


def predict(spec: ConvSpec, plan, threads: int = 1, host_params: Host | None = None) -> float:
    """Predicted seconds of one call of `plan` on `spec` (its batch) at `threads`; ValueError
    for a plan the model does not describe (covers())."""
    from .plan import core_spec, depthwise_blocks

    if not covers(plan):
        raise ValueError(f"the cost model does not describe {plan.layout} {plan.algorithm} plans")
    h = host_params or host(plan.isa if plan.isa != "auto" else None)
    image = spec.with_batch(1)
    one, units, bands = _image_seconds(image, plan, h)
    batch = max(spec.batch, 1)
    threads = max(int(threads), 1)
    total = one * batch
    if threads > 1:
        # How the core splits the call (_core.parallel_mode): whole (image, group) tasks,
        # column classes / row bands with a buffer each, or the output channels of a shared
        # buffer (a barrier per band); NHWC plans: bands of output rows of every image.
        mode = "bands" if plan.layout == "NHWC" else _core.parallel_mode(
            core_spec(image), plan.algorithm, max(plan.column_block, 1), batch, threads,
            plan.parallel == "shared")
        if mode == "tasks":
            # whole (image, group) tasks; the channel-blocked depthwise path's are its
            # (image, block, band) units
            units = batch * (units if depthwise_blocks(image, plan) else image.groups)
        elif mode in ("classes", "bands"):
            units = batch * units
        if mode == "channels":
            # (the first band's barrier is the parallel region's own join, as in every mode)
            total = total / threads + batch * (bands - 1) * BAND_SYNC_CALLS * h.call_s
        else:
            total = total * (-(-units // threads)) / units
    return total + h.call_s


def best_plan(spec: ConvSpec, plans: list, threads: int = 1, isa: str | None = None,
              host_params: Host | None = None):
    """The plan with the lowest predicted time (the first on ties: candidates come in a
    fixed order, so the choice is deterministic for a given host)."""
    h = host_params or host(isa)
    best, best_time = None, math.inf
    for plan in plans:
        t = predict(spec, plan, threads, h)
        if t < best_time:
            best, best_time = plan, t
    return best
