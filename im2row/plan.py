"""Plans: how one convolution shape is executed, the choices valid for a shape, the workspace
budget, and the default (the cost model's pick among a few candidates per algorithm, within
the budget).  The tuner searches the same space (plan_space) and stores Plans."""
from __future__ import annotations

import functools
import operator
from dataclasses import asdict, dataclass, fields, replace

from . import _core, hwinfo
from ._threads import get_num_threads
from .spec import ConvSpec

ALGORITHMS = ("incremental", "rowwise", "classic", "pointwise", "depthwise", "indirect")
# The internal layout a plan runs in; the caller's layout is the spec's.  Each layout has its
# own core path and algorithms (_core.ALGORITHMS, _core.NHWC_ALGORITHMS).
LAYOUTS = ("NCHW", "NHWC")
NHWC_ALGORITHMS = ("indirect", "rowwise", "depthwise")
GEMMS = ("sgemm", "packed")
PARALLEL = ("split", "shared", "blas")


@dataclass(frozen=True)
class Plan:
    """How to run one convolution shape.

    algorithm:    'incremental' (improved im2row: ring buffer per column class, only new
                  input taps gathered), 'rowwise' (the buffer holds a band of padded input
                  rows once; one packed GEMM per output row whose B rows are pointers into
                  it: packed GEMM only), 'classic' (whole patch matrix), 'pointwise' (1x1:
                  GEMM on the input itself when strides allow), 'depthwise' (direct kernel).
    column_block: incremental only: output columns per buffer fill (GEMM N = OH * column_block).
    channel_block: channels per pass (0 = all).  incremental: output channels per pass over
                  the columns, so a pass's weights stay in cache when they are large and the
                  columns many.  classic: input channels per pass: the buffer is one pass's
                  patch matrix and the passes' GEMMs accumulate, so a small map with many
                  channels runs one GEMM as wide as its output within a small buffer.
                  depthwise (channel multiplier 1): channels per channels-last block run by
                  the NHWC depthwise kernel (>= 2; 0 = plane by plane, vectorised along rows).
    row_block:    incremental and rowwise: output rows per band (0 = all); an incremental
                  band goes through every column class before the next, so its output and
                  buffer stay in cache; a rowwise band is what its buffer holds.  Depthwise
                  by channel blocks: the band of output rows whose input rows one task
                  transposes channels-last (0 = all).
    gemm:         'sgemm' (SciPy's BLAS) or 'packed' (our SIMD kernel with pre-packed weights).
    isa:          kernel set: 'auto' (the active one) or a name from hwinfo.available_isas().
    parallel:     with several threads: 'split' (our threads take images, or column classes
                  of one image with a buffer each), 'shared' (as split, but inside one image
                  the threads share one buffer: workspace as for one thread), each sgemm
                  single-threaded; or 'blas' (serial loop, sgemm gets the threads).
    layout:       the layout the core runs in: 'NCHW' (the algorithms above) or 'NHWC'
                  (channels-last, no transposes for NHWC callers): 'indirect' (indirect GEMM,
                  one pointer per output pixel and tap, nothing copied), 'rowwise' (one
                  pointer per kernel row: the channels-last improved im2row, only edge
                  windows copied) or 'depthwise' (vectorised across channels); row_block is
                  then the band of output rows a worker takes (0 = sized to the L2 cache) and
                  gemm, parallel, column_block, channel_block do not apply.  A caller whose
                  layout differs pays one transform of the input and one of the output.
    gemm_kc, gemm_mc: packed GEMM only: its k slice and rows of A per block (0 = the analytic
                  model's choice from this host's caches, kernels/gemm-blocking.c).  NHWC
                  plans: gemm_kc is the k slice of the weight panels (the same model's).
    """

    algorithm: str = "incremental"
    column_block: int = 0
    channel_block: int = 0
    row_block: int = 0
    gemm: str = "sgemm"
    isa: str = "auto"
    parallel: str = "split"
    layout: str = "NCHW"
    gemm_kc: int = 0
    gemm_mc: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown plan fields: {sorted(unknown)}")
        return cls(**data)

    def resolved(self) -> "Plan":
        """The same plan with 'auto' replaced by the ISA that would run it."""
        return replace(self, isa=hwinfo.get_isa()) if self.isa == "auto" else self


def effective_axes(spec: ConvSpec) -> tuple:
    """(stride_h, stride_w, dilation_h, dilation_w) as the core runs them: a stride along an
    axis with one output, or a dilation along a kernel axis of one tap, changes nothing and
    is 1, so that strides far beyond the image (2**40 and up) neither reach the core's range
    checks nor size stride-phase buffers by the stride itself."""
    return (1 if spec.out_height == 1 else spec.stride_h,
            1 if spec.out_width == 1 else spec.stride_w,
            1 if spec.kernel_h == 1 else spec.dilation_h,
            1 if spec.kernel_w == 1 else spec.dilation_w)


def core_spec(spec: ConvSpec) -> tuple:
    """The per-image geometry tuple the Cython core takes (strides as effective_axes)."""
    sh, sw, dh, dw = effective_axes(spec)
    return (spec.in_channels, spec.height, spec.width, spec.out_channels, spec.kernel_h,
            spec.kernel_w, sh, sw, spec.pad_top, spec.pad_left, dh, dw, spec.out_height,
            spec.out_width, spec.groups)


_MAX_BLOCK = 2**31 - 1  # the core takes C ssize_t; larger values mean "all" anyway
MAX_INCREMENTAL_STRIDE = 64  # the schedule keeps one row section per vertical stride phase


def valid_algorithms(spec: ConvSpec, layout: str = "NCHW") -> list:
    if layout == "NHWC":
        return nhwc_algorithms(spec)
    algos = ["classic"]
    if spec.stride_h <= MAX_INCREMENTAL_STRIDE:
        algos.insert(0, "incremental")
    if spec.is_pointwise:
        algos.append("pointwise")
    if spec.group_in_channels == 1 and spec.groups > 1:
        algos.append("depthwise")
    else:
        algos.insert(1, "rowwise")
    return algos


def column_blocks(spec: ConvSpec) -> list:
    """Distinct effective column-block sizes (the schedule rounds any value to one of these)."""
    ow = spec.out_width
    return sorted({-(-ow // (-(-ow // b))) for b in range(1, ow + 1)})


def channel_blocks(spec: ConvSpec) -> list:
    """0 (all channels in one pass), a few multiples of 16 below the group's output channels
    (incremental), the group's input channels split into 2-16 passes (classic) and channel
    blocks of the channel-blocked depthwise path."""
    ocg = spec.group_out_channels
    return sorted({0} | {cb for cb in (16, 32, 64, 128, 256) if cb < ocg}
                  | set(input_passes(spec)) | set(dw_block_choices(spec)))


def input_passes(spec: ConvSpec) -> list:
    """Classic's input channels per pass: the group's channels in 2, 4, 8 or 16 equal passes,
    each still at least one GEMM k slice deep (below that, a pass's GEMM would store C more
    often than it computes)."""
    cg, taps = spec.group_in_channels, spec.kernel_h * spec.kernel_w
    return sorted({-(-cg // parts) for parts in (2, 4, 8, 16)
                   if -(-cg // parts) < cg and -(-cg // parts) * taps >= MIN_PASS_DEPTH})


# The shallowest classic pass: a GEMM depth below which one pass's C traffic outweighs it.
MIN_PASS_DEPTH = 256


def _dw_blockable(spec: ConvSpec) -> bool:
    """Depthwise with channel multiplier 1: what the channel-blocked path runs."""
    return spec.is_depthwise and spec.out_channels == spec.in_channels


def depthwise_blocks(spec: ConvSpec, plan: Plan) -> int:
    """Channels per block of a depthwise plan run channel-blocked (the core's _dw_blocked:
    channel multiplier 1, channel_block >= 2; at most all channels), else 0."""
    if (plan.algorithm != "depthwise" or plan.layout != "NCHW" or plan.channel_block < 2
            or not _dw_blockable(spec)):
        return 0
    return min(plan.channel_block, spec.in_channels)


def band_span(spec: ConvSpec, rows: int) -> int:
    """Input rows (padding included) that a band of `rows` output rows reads."""
    sh, _, dh, _ = effective_axes(spec)
    return (rows - 1) * sh + (spec.kernel_h - 1) * dh + 1


def dw_block_for_l1(spec: ConvSpec) -> int:
    """The default channel block of the channel-blocked depthwise path: the most whole
    16-float vectors of channels whose input rows under one output row (kernel height x
    input width x block, read kh*kw times while the row is computed) fit in half the L1.
    Fewer channels per block means more rows, transposes and kernel calls per layer: small
    maps take large blocks."""
    if not _dw_blockable(spec):
        return 0
    l1 = hwinfo.cache_sizes().get("l1d") or 32 << 10
    per_channel = 4 * band_span(spec, 1) * spec.width
    fitting = (l1 // 2 // per_channel) // 16 * 16
    return min(max(fitting, 16), spec.in_channels)


def dw_default_blocks(spec: ConvSpec) -> list:
    """The channel blocks the default weighs: dw_block_for_l1's and its doublings up to every
    channel.  Larger blocks trade L1 hits of the rows under an output row for fewer kernel
    calls and tap tables (the cost model's _dw_blocked_seconds): small maps and 5x5/7x7
    kernels measured fastest at 96-192 channels."""
    first = dw_block_for_l1(spec)
    if not first:
        return []
    out = [first]
    while out[-1] < spec.in_channels:
        out.append(min(2 * out[-1], spec.in_channels))
    return out


def dw_band_rows(spec: ConvSpec, blocks: int) -> int:
    """The default band (output rows) of the channel-blocked depthwise path: every row (0)
    where a block's channels-last input and output fit in half the L2, else the most rows
    whose band does (bands re-read the rows they share)."""
    half_l2 = _l2_bytes() // 2
    whole = 4 * blocks * (spec.height * spec.width + spec.out_height * spec.out_width)
    if whole <= half_l2:
        return 0
    rows = 1
    while (rows < spec.out_height
           and 4 * blocks * (band_span(spec, rows + 1) * spec.width
                             + (rows + 1) * spec.out_width) <= half_l2):
        rows += 1
    return rows


def dw_block_choices(spec: ConvSpec) -> list:
    """Channel blocks of the channel-blocked depthwise path: whole vectors (16 floats, the
    widest ISA's) up to every channel."""
    if not _dw_blockable(spec):
        return []
    c = spec.in_channels
    return sorted({b for b in (16, 32, 64, 128, 256, c) if b <= c} | set(dw_default_blocks(spec)))


def classic_passes(plan: Plan) -> tuple:
    """(input channels per pass,) of a classic plan run in passes, else (): what its packed
    weights' layout depends on."""
    return (plan.channel_block,) if plan.algorithm == "classic" and plan.channel_block else ()


def row_blocks(spec: ConvSpec) -> list:
    """0 (every output row at once) and band heights below the output height (with the
    channel-blocked depthwise default's band, sized from the L2)."""
    rows = {rb for rb in (1, 2, 4, 8, 16, 32) if rb < spec.out_height}
    if _dw_blockable(spec):
        rows.add(dw_band_rows(spec, dw_block_for_l1(spec)))
    return [0] + sorted(rows - {0})


def gemm_blockings(spec: ConvSpec, isa: str | None = None) -> tuple:
    """(kc choices, mc choices) of the packed GEMM: 0 (the model's) and the model's kc halved
    and doubled, mc halved and quartered, where they change the blocking at this shape's
    GEMM depth and height (small GEMMs get just [0])."""
    isa = isa or hwinfo.get_isa()
    if isa == "scalar" or spec.group_in_channels == 1 and spec.groups > 1:
        return [0], [0]
    kernels = hwinfo.kernel_set(isa)
    m, k = spec.group_out_channels, spec.group_in_channels * spec.kernel_h * spec.kernel_w
    big = 1 << 30
    model = _core.gemm_blocking(kernels, big, 1, big)      # the host's, before fitting a shape
    here = _core.gemm_blocking(kernels, m, 1, k)
    kcs, mcs = [0], [0]
    for kc in (model["kc"] // 2, model["kc"] * 2):
        if kc > 0 and _core.gemm_blocking(kernels, m, 1, k, kc=kc)["kc"] != here["kc"]:
            kcs.append(kc)
    for mc in (model["mc"] // 2, model["mc"] // 4):
        if mc > 0 and _core.gemm_blocking(kernels, m, 1, k, mc=mc)["mc"] != here["mc"]:
            mcs.append(mc)
    return kcs, mcs


def plan_space(spec: ConvSpec) -> dict:
    """Every choice that is valid for this shape, per plan field."""
    kcs, mcs = gemm_blockings(spec)
    return {
        "algorithm": list(dict.fromkeys(valid_algorithms(spec) + nhwc_algorithms(spec))),
        "column_block": column_blocks(spec),
        "channel_block": channel_blocks(spec),
        "row_block": row_blocks(spec),
        "gemm": list(GEMMS),
        "isa": hwinfo.available_isas(),
        "parallel": list(PARALLEL),
        "layout": list(LAYOUTS),
        "gemm_kc": kcs,
        "gemm_mc": mcs,
    }


def validate_plan(spec: ConvSpec, plan: Plan) -> None:
    if plan.layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {plan.layout!r}")
    if plan.algorithm not in valid_algorithms(spec, plan.layout):
        raise ValueError(f"algorithm {plan.algorithm!r} is not valid for this shape in layout "
                         f"{plan.layout}; valid: {valid_algorithms(spec, plan.layout)}")
    if plan.gemm not in GEMMS:
        raise ValueError(f"gemm must be one of {GEMMS}, got {plan.gemm!r}")
    if plan.parallel not in PARALLEL:
        raise ValueError(f"parallel must be one of {PARALLEL}, got {plan.parallel!r}")
    if plan.algorithm == "rowwise" and plan.gemm != "packed" and plan.layout == "NCHW":
        raise ValueError("algorithm 'rowwise' reads its buffer through row pointers: it needs "
                         "gemm='packed'")
    if plan.parallel == "blas" and plan.gemm != "sgemm" and plan.layout == "NCHW":
        raise ValueError("parallel='blas' gives the threads to BLAS's sgemm; a gemm='packed' "
                         "plan runs our GEMM: use parallel='split' or 'shared'")
    if plan.isa != "auto" and plan.isa not in hwinfo.available_isas():
        raise ValueError(f"ISA {plan.isa!r} is not available; available: {hwinfo.available_isas()}")
    for name in ("column_block", "channel_block", "row_block", "gemm_kc", "gemm_mc"):
        value = getattr(plan, name)
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
        if not 0 <= value <= _MAX_BLOCK:
            raise ValueError(f"{name} must be in [0, {_MAX_BLOCK}], got {value}")
    if plan.algorithm == "incremental" and plan.column_block < 1:
        raise ValueError("incremental plans need column_block >= 1")
    if plan.layout == "NHWC" and plan.parallel == "blas":
        raise ValueError("parallel='blas' gives the threads to sgemm; NHWC plans run our kernels")


def scratch_bytes(spec: ConvSpec, plan: Plan, threads: int = 1) -> int:
    """Scratch one call allocates (im2row buffer, a pass's output block, GEMM row pointers),
    per worker thread where threads work on separate buffers; plus, when the plan's layout is
    not the caller's, the transformed copies of input and output."""
    transforms = layout_transform_bytes(spec, plan)
    if plan.layout == "NHWC":
        return transforms + 4 * _core.nhwc_scratch_floats(
            core_spec(spec), plan.algorithm, nhwc_row_block(spec, plan),
            hwinfo.kernel_set(plan.resolved().isa), max(spec.batch, 1), threads,
            spec.layout != "NHWC")
    return transforms + _nchw_scratch_bytes(spec, plan, threads)


def _nchw_scratch_bytes(spec: ConvSpec, plan: Plan, threads: int) -> int:
    own_threads = 1 if (plan.parallel == "blas" and plan.gemm == "sgemm") else threads
    packed = plan.gemm == "packed"
    kernels = hwinfo.kernel_set(plan.resolved().isa) if packed else None
    return 4 * _core.scratch_floats(core_spec(spec), plan.algorithm, max(plan.column_block, 1),
                                    plan.channel_block, plan.row_block, max(spec.batch, 1),
                                    own_threads, packed, plan.parallel == "shared", kernels,
                                    plan.gemm_kc, plan.gemm_mc)


def image_input_bytes(spec: ConvSpec) -> int:
    return 4 * spec.in_channels * spec.height * spec.width


# ---- the channels-last (NHWC) path -------------------------------------------------------

def nhwc_algorithms(spec: ConvSpec) -> list:
    """NHWC algorithms valid for a shape: indirect always; rowwise reads a kernel row as
    kw*C contiguous floats (one group, no horizontal dilation); depthwise needs groups ==
    in_channels == out_channels."""
    algos = ["indirect"]
    if spec.groups == 1 and spec.dilation_w == 1 and spec.kernel_w > 1:
        algos.append("rowwise")
    if spec.is_depthwise and spec.out_channels == spec.in_channels:
        algos.append("depthwise")
    return algos


def layout_transform_bytes(spec: ConvSpec, plan: Plan) -> int:
    """The copies a call makes when the plan runs in another layout than the caller's: the
    input transformed, the output written in the plan's layout and transformed back.  (An
    NHWC plan transposes an NCHW caller's arrays band by band, in its scratch instead.)"""
    if plan.layout == spec.layout or plan.layout == "NHWC":
        return 0
    return 4 * spec.batch * (spec.in_channels * spec.height * spec.width
                             + spec.out_channels * spec.out_height * spec.out_width)


# A worker's band of output rows reads about (rows * sh + kh) input rows of W*C floats, and
# the kernel streams them once per panel of output channels: keep them in a quarter of the L2,
# which they share with the weights streaming through and the band's output.  The output is
# written once per panel too (a panel covers part of each output row), so it must stay in L2
# between panels: a quarter of it.  Every band streams all the weights once more, so bands
# are only cut finer for threads (at least four where the output has the rows) when the
# weights are at most the input; otherwise threads share a band's output-channel panels.
# (7x7 maps with 0.5-9 MB of weights ran 1.2-1.45x faster as one band, resnet50.18-.22;
# benchmarks/README.md.)  For an NCHW caller the threads cannot share a band (its transposed
# input and output are one worker's), and the transposed band is scratch: always cut.
NHWC_MIN_BANDS = 4


def nhwc_row_block(spec: ConvSpec, plan: Plan) -> int:
    """The band height an NHWC plan runs with (its row_block, or one sized to the L2 cache)."""
    if plan.row_block > 0:
        return min(plan.row_block, spec.out_height)
    l2 = hwinfo.cache_sizes()["l2"]
    row_bytes = 4 * spec.width * spec.in_channels
    fit_input = (l2 // 4 // max(row_bytes, 1) - spec.kernel_h) // spec.stride_h + 1
    fit_output = l2 // 4 // (4 * spec.out_width * spec.out_channels)
    rows = min(fit_input, fit_output, spec.out_height)
    weight_floats = (spec.kernel_h * spec.kernel_w * spec.in_channels // spec.groups
                     * spec.out_channels)
    if weight_floats > spec.height * spec.width * spec.in_channels:
        rows = spec.out_height      # every band streams the weights again: as few as can be
    if weight_floats <= spec.height * spec.width * spec.in_channels or spec.layout != "NHWC":
        # several bands: threads have units to share, an NCHW caller's transposed band stays
        # a fraction of the input
        rows = min(rows, -(-spec.out_height // NHWC_MIN_BANDS))
    return max(1, rows)


# Kernel-row pointers (rowwise) measured 1.2-1.3x faster than tap pointers on the 3-channel
# stems (a tap's pointer feeds only C multiply-adds per pixel) and the same from 64 channels on
# (benchmarks/README.md), where their copied edge windows (kw*C floats each) only add workspace.
NHWC_ROWWISE_MAX_CHANNELS = 16


def _nhwc_leaner_bands(spec: ConvSpec, plan: Plan):
    """The plan, then the same with bands of half the rows, down to one row: a band's
    pointer tables are most of an NHWC plan's workspace, so on small inputs a band narrower
    than the cache allows may be what keeps the plan within its budget."""
    yield plan
    rows = nhwc_row_block(spec, plan)
    while rows > 1:
        rows = (rows + 1) // 2
        yield replace(plan, row_block=rows)


def _default_nhwc(spec: ConvSpec) -> Plan:
    """Channels-last plan: the depthwise kernel, else kernel-row pointers for few input
    channels, else one pointer per tap."""
    algos = nhwc_algorithms(spec)
    if "depthwise" in algos:
        return Plan("depthwise", gemm="packed", layout="NHWC")
    if "rowwise" in algos and spec.in_channels <= NHWC_ROWWISE_MAX_CHANNELS:
        return Plan("rowwise", gemm="packed", layout="NHWC")
    return Plan("indirect", gemm="packed", layout="NHWC")


# -- the workspace budget -----------------------------------------------------------------------

class _InputBudget:
    """The default max_workspace: one input image's bytes (im2row's memory promise)."""

    def __repr__(self) -> str:
        return "INPUT_BUDGET"

    def __reduce__(self):
        return "INPUT_BUDGET"


INPUT_BUDGET = _InputBudget()


def check_budget(max_workspace=INPUT_BUDGET):
    """A max_workspace argument checked: INPUT_BUDGET, None (no limit) or bytes as an int."""
    if max_workspace is INPUT_BUDGET or max_workspace is None:
        return max_workspace
    if isinstance(max_workspace, bool):
        raise TypeError(f"max_workspace must be an int (bytes), None or INPUT_BUDGET, got "
                        f"{max_workspace!r}")
    try:
        limit = operator.index(max_workspace)
    except TypeError:
        raise TypeError(f"max_workspace must be an int (bytes), None or INPUT_BUDGET, got "
                        f"{type(max_workspace).__name__} {max_workspace!r}") from None
    if limit < 0:
        raise ValueError(f"max_workspace must be >= 0 bytes, got {limit}")
    return int(limit)


def workspace_limit(spec: ConvSpec, max_workspace=INPUT_BUDGET) -> int | None:
    """max_workspace -> bytes (None: no limit).  INPUT_BUDGET is one image's input bytes."""
    limit = check_budget(max_workspace)
    return image_input_bytes(spec) if limit is INPUT_BUDGET else limit


class WorkspaceError(ValueError):
    """No plan for the shape fits the caller's max_workspace."""


def within_budget(spec: ConvSpec, plan: Plan, threads: int, limit: int | None) -> bool:
    return limit is None or scratch_bytes(spec, plan, threads) <= limit


# -- candidates for the default -----------------------------------------------------------------

ROWWISE_BANDS = (1, 2, 4, 8, 16, 32)


def default_candidates(spec: ConvSpec, isa: str, threads: int) -> list:
    """The plans the default chooses among (the cost model ranks them): every algorithm the
    shape allows, with the blockings that matter for it.  Our packed GEMM beats OpenBLAS
    sgemm by 2-6x where SIMD kernels exist (benchmarks/); the scalar one is only an oracle,
    so a scalar-only machine plans sgemm."""
    gemm = "sgemm" if isa == "scalar" else "packed"
    algorithms = valid_algorithms(spec)
    out = []
    if "depthwise" in algorithms:
        # planar (vectorised along rows) and, where SIMD transposes exist, by channel blocks
        # (vectorised across channels): the cost model weighs row length against transposes
        out.append(Plan("depthwise"))
        for blocks in (dw_default_blocks(spec) if isa != "scalar" else ()):
            out.append(Plan("depthwise", channel_block=blocks,
                            row_block=dw_band_rows(spec, blocks)))
    if "pointwise" in algorithms:
        out.append(Plan("pointwise", gemm=gemm))
    if "rowwise" in algorithms and gemm == "packed":
        bands = sorted({b if b < spec.out_height else 0 for b in ROWWISE_BANDS})
        out += [Plan("rowwise", 0, 0, band, gemm="packed") for band in bands]
    if "incremental" in algorithms and not spec.is_pointwise and spec.oriented().out_height > 1:
        # (a single output row, WaveNet's 1-D layers: rowwise is one GEMM of the whole row;
        # classes of it measured 1.5-7x slower, at 2 threads too, where the model had picked
        # them)
        out += _incremental_candidates(spec, gemm, threads)
    if _nhwc_candidate_for_nchw(spec, isa):
        out.append(Plan("indirect", gemm="packed", layout="NHWC"))
    out.append(Plan("classic", gemm=gemm))
    if not spec.is_pointwise and _output_fits_half_l2(spec):
        out += [Plan("classic", 0, per_pass, gemm=gemm) for per_pass in input_passes(spec)]
    return out


def _nhwc_candidate_for_nchw(spec: ConvSpec, isa: str) -> bool:
    """The channels-last indirect GEMM as a default for an NCHW caller (its bands transposed
    in and out in scratch): dense k > 1 convolutions with more than a few input channels.
    Measured 1.1-1.45x faster than the NCHW plans on 3x3 and 1x7 layers of 14x14-56x56 maps
    with 64-512 channels (benchmarks/README.md, session 10); 1x1 layers (a GEMM on the input
    itself) and the 3-channel stems (a tap feeds only C multiply-adds) lost.  Grouped layers
    with 16 and more channels a group where the input fits the L2: 1.1-1.6x on 7x7-28x28 maps
    (shape_classes, AlexNet's g2 layers); ResNeXt's 32 groups on 1.6-12.8 MB inputs lost
    1.1-1.2x to the NCHW plans (session 13)."""
    if isa == "scalar" or spec.layout != "NCHW" or spec.is_pointwise or spec.kernel_h * spec.kernel_w == 1:
        return False
    if spec.groups == 1:
        return spec.in_channels > NHWC_ROWWISE_MAX_CHANNELS
    return (spec.group_in_channels >= NHWC_ROWWISE_MAX_CHANNELS
            and image_input_bytes(spec) <= _l2_bytes())


def _lean_plan(spec: ConvSpec, isa: str):
    """The leanest plan of all, classic one input channel at a time (or None): the fallback
    for maps so small that their padding outweighs them and no default candidate fits in one
    input's bytes.  Never a candidate otherwise: a pass per channel costs a parallel region
    per channel at several threads."""
    if spec.is_pointwise or spec.group_in_channels < 2:
        return None
    return Plan("classic", 0, 1, gemm="sgemm" if isa == "scalar" else "packed")


def _widest_lean_passes(spec: ConvSpec, lean: Plan, threads: int, limit: int) -> Plan:
    """The lean plan with the most input channels per pass whose workspace fits `limit` (equal
    passes): every pass stores the whole output once more, so on SSD's 2x2 and 3x3 heads a
    pass per channel spends most of its time storing C (8 passes instead of 128: 2-3x)."""
    lo, hi = 1, spec.group_in_channels - 1       # lo fits (the lean plan itself)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if scratch_bytes(spec, replace(lean, channel_block=mid), threads) <= limit:
            lo = mid
        else:
            hi = mid - 1
    passes = -(-spec.group_in_channels // lo)
    return replace(lean, channel_block=-(-spec.group_in_channels // passes))


def _l2_bytes() -> int:
    """This host's L2 (hwinfo.cache_sizes), 256 KB where it is unknown."""
    return hwinfo.cache_sizes().get("l2") or 256 << 10


def _output_fits_half_l2(spec: ConvSpec) -> bool:
    """Classic in input-channel passes re-reads one group's output once per pass: a default
    where that output stays in (half) this host's L2, or where the weights outweigh it
    WEIGHTS_OVER_OUTPUT times (the other algorithms stream all the weights again for every
    GEMM call of a band or class, classic once per pass).  Other large maps have wide GEMMs
    within budget anyway (incremental and rowwise bands)."""
    l2 = _l2_bytes()
    output = 4 * spec.group_out_channels * spec.out_height * spec.out_width
    weights = 4 * spec.group_out_channels * spec.group_in_channels * spec.kernel_h * spec.kernel_w
    return output <= l2 // 2 or weights >= WEIGHTS_OVER_OUTPUT * output


# Weights / output bytes from which classic passes beat re-streaming the weights per call
# (DeepLab's 2048-channel ASPP layers: 17; VGG-19's 28x28 layers, where they lose: 6).
WEIGHTS_OVER_OUTPUT = 8


def _incremental_candidates(spec: ConvSpec, gemm: str, threads: int) -> list:
    """Incremental plans per column block and band height.  With the packed GEMM only
    blocks whose classes write the output directly (or one class) are kept: they need no
    output block and no scatter."""
    geometry = core_spec(spec)
    splits = ("split", "shared") if threads > 1 else ("split",)
    out = []
    for block in column_blocks(spec):
        for band in row_blocks(spec):
            info = _core.schedule_info(geometry, block, 0, band, gemm == "packed")
            if gemm == "packed" and info["classes"] > 1 and not info["direct"]:
                continue
            out += [Plan("incremental", block, 0, band, gemm=gemm, parallel=parallel)
                    for parallel in splits]
    return out


def budget_bytes(spec: ConvSpec, threads: int, max_workspace=INPUT_BUDGET) -> int | None:
    """The workspace limit in bytes for one image of `spec` at `threads` (None: no limit).
    INPUT_BUDGET is one input image's bytes, or, on maps so small that their padding
    outweighs them and no plan fits in that, the leanest default candidate's workspace."""
    image = spec.with_batch(1)
    limit = workspace_limit(image, max_workspace)
    if max_workspace is INPUT_BUDGET:
        isa = hwinfo.get_isa()
        sizes = [ws for ws, _ in _sized(image, isa, int(threads))]
        lean = _lean_plan(image, isa)
        if lean is not None:
            sizes.append(scratch_bytes(image, lean, int(threads)))
        limit = max(limit, min(sizes))
    return limit


@functools.lru_cache(maxsize=1024)
def _sized(spec: ConvSpec, isa: str, threads: int) -> tuple:
    """(workspace bytes at `threads`, plan) of every default candidate."""
    return tuple((scratch_bytes(spec, plan, threads), plan)
                 for plan in default_candidates(spec, isa, threads))


@functools.lru_cache(maxsize=1024)
def _default_plan(spec: ConvSpec, isa: str, threads: int, limit: int | None) -> Plan:
    from . import costmodel  # the model measures the host once, on first use

    if spec.layout == "NHWC" and isa != "scalar":
        # NHWC callers run channels-last, no transposes, when it fits the budget (the scalar
        # NHWC kernels are only an oracle: a scalar machine transposes to sgemm)
        for plan in _nhwc_leaner_bands(spec, _default_nhwc(spec)):
            if limit is None or scratch_bytes(spec, plan, threads) <= limit:
                return plan

    sized = _sized(spec, isa, threads)
    fitting = [plan for ws, plan in sized if limit is None or ws <= limit]
    lean = _lean_plan(spec, isa)
    if not fitting and lean is not None and scratch_bytes(spec, lean, threads) <= limit:
        return _widest_lean_passes(spec, lean, threads, limit)
    if not fitting:
        leanest_ws, leanest = min(sized, key=lambda item: item[0])
        raise WorkspaceError(
            f"no plan fits max_workspace={limit} bytes for this shape; the leanest "
            f"({leanest.algorithm}) needs {leanest_ws} bytes at {threads} thread(s)")
    return costmodel.best_plan(spec, fitting, threads, isa)


def default_plan(spec: ConvSpec, threads: int | None = None, *,
                 max_workspace=INPUT_BUDGET) -> Plan:
    """The cost model's plan (im2row.costmodel) for an untuned shape run with `threads`
    (default: im2row's current count), among the candidates whose workspace at that thread
    count fits max_workspace: INPUT_BUDGET (default, see budget_bytes) = one input image's
    bytes, an int = bytes, None = no limit.  Cached per shape, ISA, thread count and budget;
    raises WorkspaceError when an explicit budget is below every candidate's workspace."""
    if threads is None:
        threads = get_num_threads()
    threads = int(threads)
    image = spec.with_batch(1)
    return _default_plan(image, hwinfo.get_isa(), threads,
                         budget_bytes(image, threads, max_workspace))


# The plan cache (im2row.wisdom) registers a lookup here; the runtime stays tuner-free.
_tuned_lookup = None


def set_tuned_lookup(lookup) -> None:
    global _tuned_lookup
    _tuned_lookup = lookup


def choose_plan(spec: ConvSpec, threads: int | None = None, *,
                max_workspace=INPUT_BUDGET, run_threads: int | None = None) -> Plan:
    """The tuned plan for this shape and thread count (default: im2row's current count) if
    one is cached, still valid and within max_workspace (see default_plan), else the
    default for run_threads (the threads the call will really use, useful_threads; default
    `threads`): a small layer asked to run on 8 threads gets the plan that is best on 1."""
    if threads is None:
        threads = get_num_threads()
    limit = budget_bytes(spec, int(threads), max_workspace)
    if _tuned_lookup is not None:
        plan = _tuned_lookup(spec, threads)
        if plan is not None:
            try:
                validate_plan(spec, plan)
                fits = within_budget(spec.with_batch(1), plan, threads, limit)
            except (TypeError, ValueError):
                fits = False
            if fits:
                return plan
    return default_plan(spec, run_threads or threads, max_workspace=max_workspace)


# Work below which one more thread costs more than it saves: starting a parallel region and
# waking its workers takes microseconds when the machine is idle and up to a scheduler tick
# when other pools (torch, onnxruntime, BLAS) keep the cores busy spinning.  Work is counted
# in FLOPs plus the memory traffic of input and output at a FLOP-equivalent per element, so
# memory-bound layers (depthwise) count what they really cost.
MIN_WORK_PER_THREAD = 2_000_000
_ELEMENT_WORK = 64


def useful_threads(spec: ConvSpec, threads: int) -> int:
    """How many of `threads` a call of this shape can use to advantage (>= 1)."""
    elements = spec.batch * (spec.in_channels * spec.height * spec.width
                             + spec.out_channels * spec.out_height * spec.out_width)
    work = spec.flops + _ELEMENT_WORK * elements
    return max(1, min(threads, work // MIN_WORK_PER_THREAD))
