"""The default thread count (issue 13): set_num_threads > IM2ROW_NUM_THREADS > OMP_NUM_THREADS >
the CPUs this process may use (affinity mask capped by the cgroup v2/v1 CPU quota); and the
BLAS limit covering whatever BLAS threadpoolctl finds."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import im2row
from im2row import _threads

from conftest import NO_SUBPROCESS, child_env, assert_matches_reference, make_operands  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_tuned_plans")


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A fake machine: 8 CPUs in the affinity mask, a cgroup tree under tmp_path, no thread
    variables.  Returns a function writing cgroup files: machine(proc_cgroup, {path: text})."""
    for name in ("IM2ROW_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(_threads, "PROC_CGROUP", str(tmp_path / "proc-self-cgroup"))
    monkeypatch.setattr(_threads, "CGROUP_ROOT", str(tmp_path / "cgroup"))
    (tmp_path / "cgroup").mkdir()
    _threads.refresh_defaults()
    im2row.set_num_threads(None)

    def write(proc_cgroup: str, files: dict):
        (tmp_path / "proc-self-cgroup").write_text(proc_cgroup)
        for rel, text in files.items():
            path = tmp_path / "cgroup" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        _threads.refresh_defaults()

    yield write
    _threads.refresh_defaults()
    im2row.set_num_threads(None)


def test_affinity_mask_without_quota(machine):
    machine("0::/\n", {})
    assert im2row.get_num_threads() == 8


@pytest.mark.parametrize("files,expected", [
    ({"cpu.max": "200000 100000\n"}, 2),                               # container root
    ({"job/cpu.max": "150000 100000\n"}, 2),                           # 1.5 CPUs -> 2
    ({"job/cpu.max": "50000 100000\n"}, 1),                            # half a CPU -> 1
    ({"cpu.max": "300000 100000", "job/cpu.max": "max 100000"}, 3),    # a parent's limit
    ({"job/cpu.max": "1600000 100000\n"}, 8),                          # quota above the mask
    ({"job/cpu.max": "max 100000\n"}, 8),                              # unlimited
    ({"job/cpu.max": "garbage\n"}, 8),                                 # unreadable: ignored
])
def test_cgroup_v2_quota(machine, files, expected):
    machine("0::/job\n", files)
    assert im2row.get_num_threads() == expected


@pytest.mark.parametrize("quota,expected", [("200000", 2), ("-1", 8), ("x", 8)])
def test_cgroup_v1_quota(machine, quota, expected):
    machine("5:cpuacct,cpu:/docker/abc\n3:memory:/docker/abc\n",
            {"cpuacct,cpu/docker/abc/cpu.cfs_quota_us": quota + "\n",
             "cpuacct,cpu/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert im2row.get_num_threads() == expected


def test_a_two_cpu_container_on_a_big_host_runs_two_threads(machine, monkeypatch, rng):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    machine("0::/\n", {"cpu.max": "200000 100000\n"})
    assert im2row.get_num_threads() == 2
    x, w, b = make_operands(rng, (1, 4, 9, 9), (8, 4, 3, 3))
    assert_matches_reference(im2row.conv2d(x, w, b, padding=1), x, w, b, padding=1)


def test_order_of_the_settings(machine, monkeypatch):
    machine("0::/\n", {"cpu.max": "200000 100000\n"})
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert im2row.get_num_threads() == 5                     # OMP beats the CPUs available
    monkeypatch.setenv("OMP_NUM_THREADS", "6,2")
    assert im2row.get_num_threads() == 6                     # OpenMP's nested list: level 1
    monkeypatch.setenv("IM2ROW_NUM_THREADS", "3")
    assert im2row.get_num_threads() == 3                     # im2row's own variable beats OMP
    im2row.set_num_threads(np.int64(4))
    assert im2row.get_num_threads() == 4 and type(im2row.get_num_threads()) is int
    im2row.set_num_threads(None)
    assert im2row.get_num_threads() == 3


@pytest.mark.parametrize("value", ["0", "-1", "many", ","])
def test_unusable_omp_num_threads_is_ignored_with_a_warning(machine, monkeypatch, value):
    machine("0::/\n", {})
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    _threads._omp_warned.discard(value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert im2row.get_num_threads() == 8
        assert im2row.get_num_threads() == 8
    assert len(caught) == 1 and "OMP_NUM_THREADS" in str(caught[0].message)


@pytest.mark.parametrize("value", [np.int64(2), np.int32(3), np.uint8(1)], ids=repr)
def test_numpy_integers_are_thread_counts(value, rng):
    assert _threads.check_threads(value) == int(value)
    x, w, b = make_operands(rng, (2, 4, 7, 7), (6, 4, 3, 3))
    assert_matches_reference(im2row.conv2d(x, w, b, threads=value), x, w, b)


@pytest.mark.parametrize("value", [0, -1, np.int64(0), True, 2.0, "2", None], ids=repr)
def test_not_thread_counts(value):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        _threads.check_threads(value)


@NO_SUBPROCESS
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity API")
def test_real_affinity_mask_in_a_child():
    code = textwrap.dedent("""
        import os
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        import im2row
        print(im2row.get_num_threads())
    """)
    env = child_env()
    for name in ("IM2ROW_NUM_THREADS", "OMP_NUM_THREADS"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


# -- the BLAS pool ----------------------------------------------------------------------------

def test_every_blas_is_limited_while_our_threads_run(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    selected = []

    class Recording(threadpoolctl.ThreadpoolController):
        def select(self, **kwargs):
            selected.append(kwargs)
            return super().select(**kwargs)

    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", Recording)
    limiter = _threads._BlasLimit()
    with limiter.limited(1):
        inside = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert selected == [{"user_api": "blas"}]            # not one implementation (openblas)
    assert inside and all(i["num_threads"] == 1 for i in inside), inside
