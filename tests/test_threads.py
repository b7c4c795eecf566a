"""Threads: every way the core splits a call (whole tasks, column classes, output channels),
every Plan.parallel mode, several thread counts; thread-count settings."""
import dataclasses

import numpy as np
import pytest

import im2row
from im2row import _core
from im2row.plan import core_spec, scratch_bytes
from conftest import assert_matches_reference, make_operands, reference_pair

pytestmark = pytest.mark.usefixtures("no_tuned_plans")


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    # These cases are small on purpose; let them use every thread they are given so that each
    # split of the work really runs multi-threaded (calls normally drop threads they cannot use).
    monkeypatch.setattr(im2row.plan, "MIN_WORK_PER_THREAD", 1)
    yield
    im2row.set_num_threads(None)


# name: (x shape, weight shape, conv, algorithm, column_block)
CASES = {
    "incremental-classes": ((1, 5, 12, 20), (40, 5, 3, 3), dict(padding=1), "incremental", 1),
    "incremental-channels-g1": ((1, 5, 12, 20), (70, 5, 3, 3), dict(padding=1), "incremental", 20),
    "incremental-channels-g3": ((1, 5, 12, 21), (40, 5, 3, 3), dict(padding=1, stride=(1, 1)),
                                "incremental", 7),
    "incremental-s2-classes": ((1, 4, 15, 31), (36, 4, 3, 3), dict(stride=2, padding=1),
                               "incremental", 2),
    "incremental-grouped": ((1, 6, 10, 12), (66, 3, 3, 3), dict(padding=1, groups=2),
                            "incremental", 4),
    "classic-channels": ((1, 5, 9, 11), (70, 5, 3, 3), dict(padding=(0, 1, 2, 1)), "classic", 0),
    "classic-tasks": ((4, 5, 9, 11), (40, 5, 3, 3), dict(padding=1), "classic", 0),
    "pointwise-view": ((1, 24, 9, 10), (70, 24, 1, 1), dict(), "pointwise", 0),
    "pointwise-strided": ((1, 24, 9, 10), (50, 24, 1, 1), dict(stride=2), "pointwise", 0),
    "depthwise": ((1, 6, 11, 12), (12, 1, 3, 3), dict(padding=1, groups=6), "depthwise", 0),
    "incremental-tasks": ((3, 5, 8, 9), (20, 5, 3, 3), dict(padding=1), "incremental", 3),
    "incremental-channel-block": ((1, 5, 12, 20), (70, 5, 3, 3), dict(padding=1), "incremental", 5),
    "incremental-row-bands": ((1, 5, 17, 20), (40, 5, 3, 3), dict(padding=1), "incremental", 4),
    "rowwise-bands": ((1, 5, 17, 20), (40, 5, 3, 3), dict(padding=1, stride=(1, 2)), "rowwise", 0),
    "rowwise-tasks": ((3, 4, 9, 11), (20, 2, 3, 3), dict(padding=1, groups=2), "rowwise", 0),
}
CHANNEL_BLOCK = {"incremental-channel-block": 16, "incremental-row-bands": 16}
ROW_BLOCK = {"incremental-row-bands": 4, "rowwise-bands": 3, "rowwise-tasks": 2}


@pytest.fixture(scope="module")
def operands():
    rng = np.random.default_rng(77)
    cache = {}

    def get(name):
        if name not in cache:
            x_shape, w_shape, conv, _, _ = CASES[name]
            x, w, b = make_operands(rng, x_shape, w_shape, bias=len(cache) % 2 == 0)
            cache[name] = (x, w, b, conv, reference_pair(x, w, b, **conv))
        return cache[name]

    return get


@pytest.mark.parametrize("threads", [1, 2, 3, 5], ids=lambda t: f"t{t}")
@pytest.mark.parametrize("parallel", ["split", "shared", "blas"])
@pytest.mark.parametrize("gemm", ["sgemm", "packed"])
@pytest.mark.parametrize("name", list(CASES))
def test_thread_splits(name, gemm, parallel, threads, operands):
    if parallel == "blas" and gemm == "packed":
        pytest.skip("'blas' hands threads to sgemm only (test_blas_split_needs_sgemm)")
    if CASES[name][3] == "rowwise" and gemm == "sgemm":
        pytest.skip("rowwise runs on the packed GEMM only")
    x, w, b, conv, expected = operands(name)
    algorithm, block = CASES[name][3], CASES[name][4]
    plan = im2row.Plan(algorithm=algorithm, column_block=block,
                       channel_block=CHANNEL_BLOCK.get(name, 0), row_block=ROW_BLOCK.get(name, 0),
                       gemm=gemm, parallel=parallel)
    y = im2row.conv2d(x, w, b, **conv, plan=plan, threads=threads)
    assert_matches_reference(y, x, w, b, expected=expected, **conv)
    layer = im2row.Conv2d(w, b, **conv, plan=plan, threads=threads)
    assert_matches_reference(layer(x), x, w, b, expected=expected, **conv)


def test_blas_split_needs_sgemm():
    x = np.zeros((1, 2, 6, 6), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="parallel='blas'"):
        im2row.conv2d(x, w, plan=im2row.Plan("classic", gemm="packed", parallel="blas"))


def test_shared_split_keeps_one_buffer():
    """'shared' splits one image over threads with the workspace of one thread."""
    spec = im2row.make_spec((1, 16, 20, 20), (16, 16, 3, 3), padding=1)
    split = im2row.Plan("incremental", 2, gemm="packed", parallel="split")
    shared = dataclasses.replace(split, parallel="shared")
    assert _core.parallel_mode(core_spec(spec), "incremental", 2, 1, 2) == "classes"
    assert _core.parallel_mode(core_spec(spec), "incremental", 2, 1, 2, True) == "channels"
    assert scratch_bytes(spec, shared, 2) <= scratch_bytes(spec, split, 1)
    assert scratch_bytes(spec, split, 2) > scratch_bytes(spec, split, 1)


def test_cases_reach_every_split_mode():
    """The cases above exercise each way the core can split a call (with 2 and 3 threads)."""
    if not hasattr(_core, "parallel_mode"):
        pytest.skip("core does not report its split mode")
    expected = {"incremental-classes": "classes", "incremental-channels-g1": "channels",
                "classic-channels": "channels", "classic-tasks": "tasks", "depthwise": "tasks",
                "pointwise-view": "channels", "incremental-tasks": "tasks",
                "rowwise-bands": "classes", "rowwise-tasks": "tasks"}
    for name, mode in expected.items():
        x_shape, w_shape, conv, algorithm, block = CASES[name]
        spec = im2row.make_spec(x_shape, w_shape, **conv)
        for threads in (2, 3):
            got = _core.parallel_mode(core_spec(spec), algorithm, max(block, 1), x_shape[0], threads)
            assert got == mode, (name, threads, got)


def test_default_thread_count_and_setting(monkeypatch, rng):
    monkeypatch.delenv("IM2ROW_NUM_THREADS", raising=False)
    im2row.set_num_threads(None)
    default = im2row.get_num_threads()
    assert isinstance(default, int) and default >= 1
    im2row.set_num_threads(3)
    assert im2row.get_num_threads() == 3
    monkeypatch.setenv("IM2ROW_NUM_THREADS", "2")
    assert im2row.get_num_threads() == 3            # explicit setting wins over the env var
    im2row.set_num_threads(None)
    assert im2row.get_num_threads() == 2
    x, w, b = make_operands(rng, (1, 4, 9, 9), (40, 4, 3, 3))
    assert_matches_reference(im2row.conv2d(x, w, b, padding=1), x, w, b, padding=1)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bad_env_thread_count(value, monkeypatch):
    monkeypatch.setenv("IM2ROW_NUM_THREADS", value)
    im2row.set_num_threads(None)
    with pytest.raises(ValueError, match="IM2ROW_NUM_THREADS"):
        im2row.get_num_threads()
