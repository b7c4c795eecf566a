"""Plans: how one convolution shape is executed, the choices valid for a shape, and the
heuristic default.  The tuner searches the same space (plan_space) and stores Plans."""
from __future__ import annotations

import functools
import operator
from dataclasses import asdict, dataclass, fields, replace

from . import _core, hwinfo
from ._threads import get_num_threads
from .spec import ConvSpec

ALGORITHMS = ("incremental", "rowwise", "classic", "pointwise", "depthwise")
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
    channel_block: incremental only: output channels per pass over the columns (0 = all), so a
                  pass's weights stay in cache when they are large and the columns many.
    row_block:    incremental and rowwise: output rows per band (0 = all); an incremental
                  band goes through every column class before the next, so its output and
                  buffer stay in cache; a rowwise band is what its buffer holds.
    gemm:         'sgemm' (SciPy's BLAS) or 'packed' (our SIMD kernel with pre-packed weights).
    isa:          kernel set: 'auto' (the active one) or a name from hwinfo.available_isas().
    parallel:     with several threads: 'split' (our threads take images, or column classes
                  of one image with a buffer each), 'shared' (as split, but inside one image
                  the threads share one buffer: workspace as for one thread), each sgemm
                  single-threaded; or 'blas' (serial loop, sgemm gets the threads).
    gemm_kc, gemm_mc: packed GEMM only: its k slice and rows of A per block (0 = the analytic
                  model's choice from this host's caches, kernels/gemm-blocking.c).
    """

    algorithm: str = "incremental"
    column_block: int = 0
    channel_block: int = 0
    row_block: int = 0
    gemm: str = "sgemm"
    isa: str = "auto"
    parallel: str = "split"
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


def core_spec(spec: ConvSpec) -> tuple:
    """The per-image geometry tuple the Cython core takes."""
    return (spec.in_channels, spec.height, spec.width, spec.out_channels, spec.kernel_h,
            spec.kernel_w, spec.stride_h, spec.stride_w, spec.pad_top, spec.pad_left,
            spec.dilation_h, spec.dilation_w, spec.out_height, spec.out_width, spec.groups)


_MAX_BLOCK = 2**31 - 1  # the core takes C ssize_t; larger values mean "all" anyway
MAX_INCREMENTAL_STRIDE = 64  # the schedule keeps one row section per vertical stride phase


def valid_algorithms(spec: ConvSpec) -> list:
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
    """0 (all output channels in one pass) and a few multiples of 16 below the group's count."""
    ocg = spec.group_out_channels
    return [0] + [cb for cb in (16, 32, 64, 128, 256) if cb < ocg]


def row_blocks(spec: ConvSpec) -> list:
    """0 (every output row at once) and band heights below the output height."""
    return [0] + [rb for rb in (1, 2, 4, 8, 16, 32) if rb < spec.out_height]


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
        "algorithm": valid_algorithms(spec),
        "column_block": column_blocks(spec),
        "channel_block": channel_blocks(spec),
        "row_block": row_blocks(spec),
        "gemm": list(GEMMS),
        "isa": hwinfo.available_isas(),
        "parallel": list(PARALLEL),
        "gemm_kc": kcs,
        "gemm_mc": mcs,
    }


def validate_plan(spec: ConvSpec, plan: Plan) -> None:
    if plan.algorithm not in valid_algorithms(spec):
        raise ValueError(f"algorithm {plan.algorithm!r} is not valid for this shape; "
                         f"valid: {valid_algorithms(spec)}")
    if plan.gemm not in GEMMS:
        raise ValueError(f"gemm must be one of {GEMMS}, got {plan.gemm!r}")
    if plan.parallel not in PARALLEL:
        raise ValueError(f"parallel must be one of {PARALLEL}, got {plan.parallel!r}")
    if plan.algorithm == "rowwise" and plan.gemm != "packed":
        raise ValueError("algorithm 'rowwise' reads its buffer through row pointers: it needs "
                         "gemm='packed'")
    if plan.parallel == "blas" and plan.gemm != "sgemm":
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


def scratch_bytes(spec: ConvSpec, plan: Plan, threads: int = 1) -> int:
    """Scratch one call allocates (im2row buffer, a pass's output block, GEMM row pointers and
    B-strip copy), per worker thread where threads work on separate buffers."""
    own_threads = 1 if (plan.parallel == "blas" and plan.gemm == "sgemm") else threads
    packed = plan.gemm == "packed"
    kernels = hwinfo.kernel_set(plan.resolved().isa) if packed else None
    return 4 * _core.scratch_floats(core_spec(spec), plan.algorithm, max(plan.column_block, 1),
                                    plan.channel_block, plan.row_block, max(spec.batch, 1),
                                    own_threads, packed, plan.parallel == "shared", kernels,
                                    plan.gemm_kc, plan.gemm_mc)


def image_input_bytes(spec: ConvSpec) -> int:
    return 4 * spec.in_channels * spec.height * spec.width


def _default_incremental(spec: ConvSpec, gemm: str, threads: int) -> Plan:
    """Incremental plan whose workspace at `threads` stays within one image's input bytes,
    scored by what measured best on the built-in suites (benchmarks/README.md): a GEMM of
    ~1024 output positions per call, then wider column blocks (fewer, longer gathers), then
    the smaller buffer.  With the packed GEMM only blocks whose classes write the output
    directly (or one class) are considered: they need no output block and no scatter."""
    budget = image_input_bytes(spec)
    geometry = core_spec(spec)
    splits = ("split", "shared") if threads > 1 else ("split",)
    best, best_score, smallest = None, None, None
    for block in column_blocks(spec):
        for band in row_blocks(spec):
            info = _core.schedule_info(geometry, block, 0, band, gemm == "packed")
            if gemm == "packed" and info["classes"] > 1 and not info["direct"]:
                continue
            for parallel in splits:
                plan = Plan("incremental", block, 0, band, gemm=gemm, parallel=parallel)
                workspace = scratch_bytes(spec, plan, threads)
                if smallest is None or workspace < smallest[0]:
                    smallest = (workspace, plan)
                if workspace > budget:
                    continue
                positions = info["rows_per_band"] * info["windows"]
                score = (min(positions, 1024), info["windows"], -workspace)
                if best_score is None or score > best_score:
                    best, best_score = plan, score
    # Nothing within budget (tiny maps where padding outweighs the input): the leanest plan.
    return best or smallest[1]


# Row-wise im2row runs one GEMM per output row (N = output width): from 56 columns on it
# measured 1-10% faster than the incremental default on the built-in suites (one copy of the
# input instead of kw, a buffer of a few input rows); narrower rows starve the GEMM.
ROWWISE_MIN_WIDTH = 56
ROWWISE_BAND_BYTES = 256 * 1024   # the band of padded rows stays in L2 while its GEMMs run


def _default_rowwise(spec: ConvSpec, threads: int):
    """Row-wise plan with the tallest band (up to 16 rows) within ROWWISE_BAND_BYTES, if its
    workspace fits one image's input at `threads`."""
    best = None
    for band in (1, 2, 4, 8, 16):
        plan = Plan("rowwise", 0, 0, band if band < spec.out_height else 0, gemm="packed")
        per_thread = scratch_bytes(spec, plan, 1)
        if best is not None and per_thread > ROWWISE_BAND_BYTES:
            break
        if scratch_bytes(spec, plan, threads) <= image_input_bytes(spec):
            best = plan
    return best


@functools.lru_cache(maxsize=1024)
def _default_plan(spec: ConvSpec, isa: str, threads: int) -> Plan:
    if "depthwise" in valid_algorithms(spec):
        return Plan("depthwise")
    # Our packed GEMM beats OpenBLAS sgemm by 2-6x where SIMD kernels exist (benchmarks/);
    # the scalar one is only an oracle, so a scalar-only machine keeps sgemm.
    gemm = "sgemm" if isa == "scalar" else "packed"
    if spec.is_pointwise:
        return Plan("pointwise", gemm=gemm)
    if gemm == "packed" and spec.out_width >= ROWWISE_MIN_WIDTH:
        plan = _default_rowwise(spec, threads)
        if plan is not None:
            return plan
    if "incremental" not in valid_algorithms(spec):
        return Plan("classic", gemm=gemm)
    return _default_incremental(spec, gemm, threads)


def default_plan(spec: ConvSpec, threads: int | None = None) -> Plan:
    """Heuristic plan for an untuned shape run with `threads` (default: im2row's current
    count), cached per shape, ISA and thread count.

    Depthwise and 1x1 have dedicated paths.  Everything else runs the improved im2row with a
    workspace smaller than one image's input (see _default_incremental)."""
    if threads is None:
        threads = get_num_threads()
    return _default_plan(spec.with_batch(1), hwinfo.get_isa(), int(threads))


# The plan cache (im2row.wisdom) registers a lookup here; the runtime stays tuner-free.
_tuned_lookup = None


def set_tuned_lookup(lookup) -> None:
    global _tuned_lookup
    _tuned_lookup = lookup


def choose_plan(spec: ConvSpec, threads: int | None = None) -> Plan:
    """The tuned plan for this shape and thread count (default: im2row's current count) if
    one is cached and still valid, else the default."""
    if threads is None:
        threads = get_num_threads()
    if _tuned_lookup is not None:
        plan = _tuned_lookup(spec, threads)
        if plan is not None:
            try:
                validate_plan(spec, plan)
                return plan
            except (TypeError, ValueError):
                pass
    return default_plan(spec, threads)


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
