"""The packed GEMM's cache blocking: the detected caches (checked against sysfs read here), the
analytic model on several cache hierarchies, and convolutions run with blockings at every edge
(kc of 1, primes, K - 1, K, past K; mc of one panel, a prime number of rows, past the output
channels) through Plan.gemm_kc / gemm_mc, against the NumPy reference, for every ISA that has a
packed GEMM and every algorithm that runs it."""
import dataclasses
from pathlib import Path

import pytest

import im2row
from im2row import _core, hwinfo
from im2row.plan import Plan, gemm_blockings, plan_space, scratch_bytes, validate_plan
from conftest import ISAS, assert_matches_reference, make_operands

pytestmark = pytest.mark.usefixtures("no_tuned_plans")

PACKED_ISAS = [isa for isa in ISAS if isa != "scalar"]
CACHE_KEYS = {"l1d", "l1d_ways", "l2", "l2_ways", "l3", "l3_ways", "l3_sharing", "line", "page",
              "source"}

# Cache hierarchies the model must handle (bytes, ways): Zen 3, Zen 4, Zen 5, Cortex-A72
# (2-way L1, no L3), a small embedded core, an Apple-like core with 128-byte lines.
HOSTS = {
    "zen3": dict(l1d=32768, l1d_ways=8, l2=524288, l2_ways=8, l3=33554432, l3_ways=16,
                 l3_sharing=16, line=64),
    "zen4": dict(l1d=32768, l1d_ways=8, l2=1048576, l2_ways=8, l3=33554432, l3_ways=16,
                 l3_sharing=2, line=64),
    "zen5": dict(l1d=49152, l1d_ways=12, l2=1048576, l2_ways=16, l3=33554432, l3_ways=16,
                 l3_sharing=16, line=64),
    "a72": dict(l1d=32768, l1d_ways=2, l2=1048576, l2_ways=16, l3=0, l3_ways=0, l3_sharing=1,
                line=64),
    "small": dict(l1d=16384, l1d_ways=4, l2=262144, l2_ways=4, l3=0, l3_ways=0, l3_sharing=1,
                  line=32),
    "m1": dict(l1d=131072, l1d_ways=8, l2=4194304, l2_ways=16, l3=8388608, l3_ways=16,
               l3_sharing=4, line=128),
}


def _sysfs_size(text: str) -> int:
    text = text.strip()
    scale = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:].upper(), 1)
    return int(text.rstrip("KkMmGg")) * scale


def _sysfs_caches() -> dict:
    """level -> size in bytes, read here independently of kernels/cpuinfo.c."""
    found = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text())
            size = _sysfs_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind != "Instruction":
            found[level] = size
    return found


def test_cache_info_is_plausible():
    info = _core.cache_info()
    assert set(info) == CACHE_KEYS
    assert info["source"] in ("sysfs", "cpuid", "ctr_el0", "fallback")
    assert 4096 <= info["l1d"] <= info["l2"]
    assert info["l3"] == 0 or info["l3"] >= info["l2"]
    assert info["line"] in (32, 64, 128, 256)
    assert info["l1d_ways"] >= 1 and info["l2_ways"] >= 1 and info["l3_sharing"] >= 1
    assert _core.cache_info() == info   # detected once


@pytest.mark.skipif(not _sysfs_caches(), reason="no Linux sysfs cache description here")
def test_cache_info_matches_sysfs():
    info, sysfs = _core.cache_info(), _sysfs_caches()
    assert info["source"] == "sysfs"
    assert info["l1d"] == sysfs[1]
    if 2 in sysfs:
        assert info["l2"] == sysfs[2]
    assert info["l3"] == sysfs.get(3, 0)


def test_cpuid_agrees_with_sysfs_where_both_answer():
    """Two independent sources (the CPU itself and the kernel's view) on x86 Linux."""
    by_cpuid, by_sysfs = _core.cache_info("cpuid"), _core.cache_info("sysfs")
    if by_cpuid is None or by_sysfs is None:
        pytest.skip("cpuid or sysfs gives no cache description here")
    for key in ("l1d", "l1d_ways", "l2", "l2_ways", "line"):
        assert by_cpuid[key] == by_sysfs[key], key
    # Virtual machines may report the L3 differently through the two; both must be sane.
    assert (by_cpuid["l3"] == 0) == (by_sysfs["l3"] == 0)


def test_unknown_cache_source_answers_none():
    assert _core.cache_info("no-such-source") is None
    assert _core.cache_info("fallback")["source"] == "fallback"


@pytest.mark.parametrize("host", sorted(HOSTS))
@pytest.mark.parametrize("isa", PACKED_ISAS)
def test_model_fits_the_caches(isa, host):
    """Low et al.'s constraints: the kc x nr B strip within L1 (a way left for C), the mc x kc
    A block within L2, the kc x nc B panel within half this core's L3 share; whole panels and
    strips."""
    caches = HOSTS[host]
    kernels = hwinfo.kernel_set(isa)
    tile = _core.gemm_tile(kernels)
    big = 1 << 20
    b = _core.gemm_blocking(kernels, big, big, big, caches=caches)
    assert b["kc"] * tile["nr"] * 4 <= caches["l1d"] * (caches["l1d_ways"] - 1) / caches["l1d_ways"] \
        or caches["l1d_ways"] <= 2 and b["kc"] * tile["nr"] * 4 <= caches["l1d"] / 2
    assert b["mc"] % tile["mr"] == 0 and b["mc"] * b["kc"] * 4 <= caches["l2"]
    assert b["kc_m"] * tile["nr_m"] * 4 <= caches["l1d"] and b["kc_m"] >= b["kc"]
    if caches["l3"]:
        assert b["nc"] % tile["nr"] == 0
        assert b["nc"] * b["kc"] * 4 <= caches["l3"] / caches["l3_sharing"] / 2 + tile["nr"] * b["kc"] * 4
    else:
        assert b["nc"] == big       # no L3 to block for: one panel
    assert b["work_floats"] >= b["kc"] * tile["nr"]       # n = 2**20: B rows pages apart


@pytest.mark.parametrize("isa", PACKED_ISAS)
def test_model_grows_with_the_caches(isa):
    kernels = hwinfo.kernel_set(isa)
    big = 1 << 20
    small = _core.gemm_blocking(kernels, big, big, big, caches=HOSTS["zen3"])
    large = _core.gemm_blocking(kernels, big, big, big, caches=dict(HOSTS["zen3"], l1d=65536, l2=2097152))
    assert large["kc"] > small["kc"] and large["mc"] >= small["mc"]
    # the blocking the kernels run on this host is the model's for the detected caches
    assert _core.gemm_blocking(kernels, big, big, big) == \
        _core.gemm_blocking(kernels, big, big, big, caches=_core.cache_info())


@pytest.mark.parametrize("isa", PACKED_ISAS)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (37, 101, 53), (600, 3, 1000), (16, 50000, 27)])
def test_resolve_fits_the_shape(isa, m, n, k):
    kernels = hwinfo.kernel_set(isa)
    mr = _core.gemm_tile(kernels)["mr"]
    for kc, mc in [(0, 0), (1, 1), (7, mr), (k + 3, m + 5), (2 * k, 3 * mr)]:
        b = _core.gemm_blocking(kernels, m, n, k, kc=kc, mc=mc)
        assert 1 <= b["kc"] <= k and b["kc"] <= (kc or b["kc"])
        assert 1 <= b["kc_m"] <= k and b["kc_m"] <= (kc or b["kc_m"])     # kc sets both
        slices = -(-k // b["kc"])
        assert (slices - 1) * b["kc"] < k                      # equal slices, none empty
        assert b["mc"] % mr == 0 and mr <= b["mc"] <= -(-m // mr) * mr
        assert 1 <= b["nc"] <= n


def test_gemm_blocking_rejects_bad_arguments():
    kernels = hwinfo.kernel_set(ISAS[0])
    if ISAS[0] == "scalar":
        pytest.skip("no packed SIMD GEMM here")
    with pytest.raises(ValueError, match="m, n, k"):
        _core.gemm_blocking(kernels, 0, 4, 4)


# ---- convolutions with the blocking overridden through the plan ----------------------------

# (x shape, weight shape, conv arguments): GEMM depth K = 117 (13 channels x 3 x 3), 37 or 1
# output channels; 1x1 (K = 13, n = 1 output position); a prime-sized map.
CASES = [
    ((1, 13, 11, 9), (37, 13, 3, 3), dict(padding=1)),
    ((1, 13, 7, 7), (1, 13, 3, 3), dict(stride=2)),
    ((2, 13, 1, 1), (37, 13, 1, 1), {}),
    ((1, 5, 35, 39), (19, 5, 3, 3), dict(padding=1, dilation=2)),   # 33 x 37 positions: B
]                                                                   # rows a page apart, copied


def _blockings(k: int, m: int, mr: int) -> list:
    kcs = [1, 2, 7, 16, k - 1, k, k + 5]
    mcs = [mr, 2 * mr + 1, m + mr]
    return [(kc, mc) for kc in kcs if kc >= 1 for mc in mcs]


@pytest.mark.parametrize("algorithm", ["incremental", "rowwise", "classic", "pointwise"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_every_blocking_matches_the_reference(isa, algorithm, case, rng):
    x_shape, w_shape, conv = CASES[case]
    spec = im2row.make_spec(x_shape, w_shape, **conv)
    plans = [Plan(algorithm, 2 if algorithm == "incremental" else 0, gemm="packed")]
    try:
        validate_plan(spec, plans[0])
    except ValueError:
        pytest.skip(f"{algorithm} is not valid for this shape")
    x, w, b = make_operands(rng, x_shape, w_shape)
    k = w_shape[1] * w_shape[2] * w_shape[3]
    mr = hwinfo.kernel_set(isa).gemm_mr
    for kc, mc in _blockings(k, w_shape[0], mr):
        plan = dataclasses.replace(plans[0], gemm_kc=kc, gemm_mc=mc)
        y = im2row.conv2d(x, w, b, plan=plan, **conv)
        assert_matches_reference(y, x, w, b, **conv)


def test_blocking_with_threads_matches_the_reference(isa, rng):
    """Per-worker B-strip buffers (split) and in-place B (shared buffer) at 2 threads."""
    x_shape, w_shape, conv = (2, 13, 12, 12), (37, 13, 3, 3), dict(padding=1)
    x, w, b = make_operands(rng, x_shape, w_shape)
    for parallel in ("split", "shared"):
        for kc, mc in [(0, 0), (5, 0), (0, 8)]:
            plan = Plan("incremental", 3, gemm="packed", parallel=parallel, gemm_kc=kc, gemm_mc=mc)
            layer = im2row.Conv2d(w, b, plan=plan, threads=2, **conv)
            assert_matches_reference(layer(x), x, w, b, **conv)
            assert_matches_reference(layer(x[:1]), x[:1], w, b, **conv)


def test_blocking_fields_are_validated():
    spec = im2row.make_spec((1, 4, 8, 8), (4, 4, 3, 3))
    with pytest.raises(ValueError, match="gemm_kc"):
        validate_plan(spec, Plan("classic", gemm="packed", gemm_kc=-1))
    with pytest.raises(TypeError, match="gemm_mc"):
        validate_plan(spec, Plan("classic", gemm="packed", gemm_mc=2.5))


def test_plan_space_offers_blockings_around_the_model():
    spec = im2row.make_spec((1, 64, 28, 28), (128, 64, 3, 3), padding=1)
    kcs, mcs = plan_space(spec)["gemm_kc"], plan_space(spec)["gemm_mc"]
    assert kcs[0] == 0 and mcs[0] == 0
    if im2row.get_isa() == "scalar":
        assert kcs == [0] and mcs == [0]
        return
    big = 1 << 30
    model = _core.gemm_blocking(hwinfo.kernel_set(im2row.get_isa()), big, 1, big)
    assert set(kcs[1:]) <= {model["kc"] // 2, model["kc"] * 2}
    assert set(mcs[1:]) <= {model["mc"] // 2, model["mc"] // 4}
    if model["kc"] < 64 * 9:          # the model slices this depth: halving it changes the slices
        assert model["kc"] // 2 in kcs
    # a tiny GEMM has nothing to block
    tiny = im2row.make_spec((1, 2, 5, 5), (3, 2, 3, 3))
    assert gemm_blockings(tiny) == ([0], [0])


def test_workspace_counts_the_strip_buffer():
    """A copied B strip per worker where the GEMM's B rows are a page apart or more; none
    (rows read in place) below."""
    if "scalar" == im2row.get_isa():
        pytest.skip("the scalar GEMM copies nothing")
    page = _core.cache_info()["page"]
    kernels = hwinfo.kernel_set(im2row.get_isa())
    assert _core.gemm_blocking(kernels, 16, page // 4 - 1, 144)["work_floats"] == 0
    side = int((page // 4) ** 0.5) + 1                    # side * side output positions >= page/4
    spec = im2row.make_spec((1, 16, side, side), (16, 16, 3, 3), padding=1)
    plan = Plan("classic", gemm="packed")
    work = _core.gemm_blocking(kernels, 16, side * side, 144)["work_floats"]
    assert work > 0
    core = _core.scratch_floats(im2row.plan.core_spec(spec), "classic", 1)
    assert scratch_bytes(spec, plan, 1) == 4 * (core + work)
    assert scratch_bytes(spec, dataclasses.replace(plan, gemm_kc=7), 1) < scratch_bytes(spec, plan, 1)
