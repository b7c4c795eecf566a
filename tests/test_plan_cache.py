"""The plan cache (im2row.wisdom): round trips, keys, damaged files, concurrent writers.

Every test runs against its own cache file (IM2ROW_PLAN_CACHE in a tmp dir) and leaves the
in-memory store as it found it at import (nothing loaded, default file read on first use)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import im2row
from im2row import Plan, wisdom
from im2row.plan import choose_plan, default_plan

from conftest import NO_SUBPROCESS, child_env, plan_other_than_default  # noqa: E402


def spec_of(shape=(1, 8, 12, 12), weight=(16, 8, 3, 3), **conv):
    conv.setdefault("padding", 1)
    return im2row.make_spec(shape, weight, **conv)


def other_plan(spec, threads=None) -> Plan:
    return plan_other_than_default(spec, threads)


def threads_now() -> int:
    return wisdom.current_threads()


def record(spec, plan, *, threads=None, path=None):
    return wisdom.record_plan(spec, plan, threads=threads or threads_now(), path=path,
                              time_s=1e-3, default_time_s=2e-3)


def collect(func):
    """Run func, return (result, RuntimeWarnings raised by it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = func()
    return result, [w for w in caught if issubclass(w.category, RuntimeWarning)]


# -- round trips --------------------------------------------------------------------------------

def test_record_then_lookup_in_a_fresh_process_state(cache):
    spec = spec_of()
    plan = other_plan(spec)
    record(spec, plan)
    assert cache.is_file()
    data = json.loads(cache.read_text())
    assert data["format"] == wisdom.FORMAT and data["schema"] == wisdom.SCHEMA
    wisdom.store().reset()  # as a new process would see it
    assert choose_plan(spec) == plan
    layer = im2row.Conv2d(np.ones(spec.weight_shape, np.float32), padding=1,
                          input_shape=spec.input_shape)
    assert layer.plan == plan
    # An untuned shape keeps the default.
    other = spec_of(shape=(1, 8, 13, 12))
    assert choose_plan(other) == default_plan(other)


def test_tuned_plan_result_matches_default(cache, rng):
    spec = spec_of()
    record(spec, other_plan(spec))
    wisdom.store().reset()
    x = rng.uniform(-1, 1, spec.input_shape).astype(np.float32)
    w = rng.uniform(-1, 1, spec.weight_shape).astype(np.float32)
    tuned = im2row.conv2d(x, w, padding=1)
    forced = im2row.conv2d(x, w, padding=1, plan=default_plan(spec))
    np.testing.assert_allclose(tuned, forced, rtol=1e-4, atol=1e-4)


def test_save_load_forget(cache, tmp_path):
    spec = spec_of()
    plan = other_plan(spec)
    record(spec, plan)
    shipped = tmp_path / "shipped" / "plans.json"
    assert im2row.save_plans(shipped) == 1
    im2row.forget_plans()
    assert choose_plan(spec) == default_plan(spec)       # forgotten, file not re-read
    assert im2row.load_plans(shipped) == 1
    assert choose_plan(spec) == plan
    im2row.forget_plans()
    assert im2row.load_plans() == 1                      # the default cache file
    assert choose_plan(spec) == plan


def test_lookup_uses_any_tuned_batch_for_conv2d(cache):
    """Conv2d plans per image (batch 1): a shape tuned at batch 4 serves it."""
    spec4 = spec_of(shape=(4, 8, 12, 12))
    plan = other_plan(spec4)
    record(spec4, plan)
    wisdom.store().reset()
    assert choose_plan(spec4) == plan
    assert choose_plan(spec4.with_batch(1)) == plan


def test_cache_off(cache, monkeypatch):
    spec = spec_of()
    record(spec, other_plan(spec))
    monkeypatch.setenv(wisdom.ENV_VAR, "off")
    wisdom.store().reset()
    assert wisdom.default_cache_path() is None
    assert choose_plan(spec) == default_plan(spec)


def test_default_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(wisdom.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert wisdom.default_cache_path() == tmp_path / "im2row" / "plans.json"


def test_atomic_write_leaves_no_temporaries(cache):
    for width in (10, 11, 12):
        spec = spec_of(shape=(1, 8, 12, width))
        record(spec, other_plan(spec))
    leftovers = [p.name for p in cache.parent.iterdir()
                 if p.name not in ("plans.json", "plans.json.lock")]
    assert leftovers == []
    assert len(json.loads(cache.read_text())["machines"][wisdom.machine_id()]["plans"]) == 3


def test_key_has_cpu_blas_version_threads_and_spec():
    identity = wisdom.machine_identity()
    assert identity["cpu"] == im2row.hwinfo.cpu_model()
    assert identity["isas"] == im2row.available_isas()
    assert identity["im2row"] == im2row.__version__
    assert {"name", "version"} <= set(identity["blas"])
    spec = spec_of()
    key = wisdom.plan_key(spec, 3, "scalar")
    assert "t=3" in key and "isa=scalar" in key and "float32" in key
    for name, value in spec.to_dict().items():
        assert f"{name}={value}" in key


# -- keys that do not match -----------------------------------------------------------------------

def _rewrite(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("field,value", [("cpu", "Some Other CPU 9000"), ("im2row", "0.0.0-other"),
                                         ("build", "0000000000000000"),
                                         ("blas", {"name": "mkl", "version": "2024",
                                                   "architecture": None, "threading": None})])
def test_foreign_machine_or_version_ignored_with_one_warning(cache, field, value):
    spec = spec_of()
    record(spec, other_plan(spec))

    def edit(data):
        for group in data["machines"].values():
            group["identity"][field] = value
    _rewrite(cache, edit)
    wisdom.store().reset()
    plan, caught = collect(lambda: [choose_plan(spec) for _ in range(3)])
    assert plan == [default_plan(spec)] * 3
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "another machine" in str(caught[0].message)


def test_other_thread_count_or_isa_not_used(cache):
    spec = spec_of()
    plan = other_plan(spec, threads_now() + 5)
    record(spec, plan, threads=threads_now() + 5)
    wisdom.store().reset()
    assert choose_plan(spec) == default_plan(spec)
    saved = getattr(sys.modules.get("im2row._threads"), "_num_threads", None)
    im2row.set_num_threads(threads_now() + 5)
    try:
        assert choose_plan(spec) == plan
        if len(im2row.available_isas()) > 1:
            im2row.set_isa(im2row.available_isas()[-1])  # plans were tuned under another ISA
            assert choose_plan(spec) == default_plan(spec)
    finally:
        im2row.set_num_threads(saved)


# -- damaged files --------------------------------------------------------------------------------

DAMAGE = {
    "empty": b"",
    "not json": b"\x00\xffgarbage{{{",
    "json list": b"[1, 2, 3]",
    "other format": json.dumps({"format": "something-else", "schema": 1}).encode(),
    "future schema": json.dumps({"format": wisdom.FORMAT, "schema": 99, "machines": {}}).encode(),
    "bad machines": json.dumps({"format": wisdom.FORMAT, "schema": 1, "machines": [1]}).encode(),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_corrupt_file_one_warning_then_defaults(cache, kind):
    spec = spec_of()
    cache.write_bytes(DAMAGE[kind])
    plans, caught = collect(lambda: [choose_plan(spec) for _ in range(3)])
    assert plans == [default_plan(spec)] * 3
    assert len(caught) == 1, [str(w.message) for w in caught]
    # im2row keeps working: a convolution through the public API
    x = np.ones(spec.input_shape, np.float32)
    w = np.ones(spec.weight_shape, np.float32)
    assert im2row.conv2d(x, w, padding=1).shape == spec.output_shape


def test_truncated_file_one_warning(cache):
    spec = spec_of()
    record(spec, other_plan(spec))
    text = cache.read_bytes()
    cache.write_bytes(text[: len(text) // 2])
    wisdom.store().reset()
    plan, caught = collect(lambda: choose_plan(spec))
    assert plan == default_plan(spec)
    assert len(caught) == 1 and "corrupt" in str(caught[0].message)


def test_unreadable_cache_one_warning(cache):
    cache.mkdir()  # a directory where the file should be: open() fails
    spec = spec_of()
    plan, caught = collect(lambda: [choose_plan(spec), choose_plan(spec)])
    assert plan == [default_plan(spec)] * 2
    assert len(caught) == 1


def test_bad_entry_skipped_good_ones_kept(cache):
    spec_a, spec_b = spec_of(), spec_of(shape=(1, 8, 12, 13))
    record(spec_a, other_plan(spec_a))
    record(spec_b, other_plan(spec_b))

    def edit(data):
        plans = next(iter(data["machines"].values()))["plans"]
        key = next(k for k, e in plans.items() if e["spec"]["width"] == 13)
        plans[key]["plan"] = {"algorithm": "incremental", "no_such_field": 1}
    _rewrite(cache, edit)
    wisdom.store().reset()
    (a, b), caught = collect(lambda: (choose_plan(spec_a), choose_plan(spec_b)))
    assert a == other_plan(spec_a) and b == default_plan(spec_b)
    assert len(caught) == 1


def test_writer_replaces_a_corrupt_file(cache):
    cache.write_text("{ not json")
    spec = spec_of()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record(spec, other_plan(spec))
    assert json.loads(cache.read_text())["schema"] == wisdom.SCHEMA


def test_lock_falls_back_to_fcntl_without_filelock(cache, monkeypatch):
    pytest.importorskip("fcntl")
    monkeypatch.setitem(sys.modules, "filelock", None)  # import filelock -> ImportError
    spec = spec_of()
    record(spec, other_plan(spec))
    assert (cache.parent / "plans.json.lock").exists()
    wisdom.store().reset()
    assert choose_plan(spec) == other_plan(spec)


# -- several processes ------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    if sys.argv[3] == "nofilelock":
        sys.modules["filelock"] = None
    import im2row
    from im2row import Plan, wisdom
    worker, n = int(sys.argv[1]), int(sys.argv[2])
    plan = Plan("classic", gemm="packed", isa=im2row.available_isas()[-1])
    for i in range(n):
        spec = im2row.make_spec((1, 4, 6 + worker, 6 + i), (4, 4, 3, 3), padding=1)
        wisdom.record_plan(spec, plan, threads=1, time_s=1.0, default_time_s=2.0)
""")


@NO_SUBPROCESS
@pytest.mark.parametrize("lock", ["filelock", "nofilelock"])
def test_concurrent_writers_keep_every_plan(cache, lock):
    if lock == "filelock":
        pytest.importorskip("filelock")
    workers, per_worker = 4, 12
    env = child_env(**{wisdom.ENV_VAR: str(cache)})
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(per_worker), lock],
                              cwd=str(cache.parent), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for w in range(workers)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    data = json.loads(cache.read_text())  # valid JSON
    plans = data["machines"][wisdom.machine_id()]["plans"]
    assert len(plans) == workers * per_worker
    seen = {(e["spec"]["height"], e["spec"]["width"]) for e in plans.values()}
    assert seen == {(6 + w, 6 + i) for w in range(workers) for i in range(per_worker)}


@NO_SUBPROCESS
def test_runtime_never_imports_optuna_and_works_without_filelock(cache):
    code = textwrap.dedent("""
        import sys
        sys.modules["filelock"] = None
        import numpy as np
        import im2row
        x = np.ones((1, 8, 12, 12), np.float32); w = np.ones((16, 8, 3, 3), np.float32)
        y = im2row.conv2d(x, w, padding=1)
        im2row.load_plans(); im2row.forget_plans()
        assert "optuna" not in sys.modules, "the runtime imported optuna"
        assert "im2row.tuner" not in sys.modules
        print(y.shape)
    """)
    spec = spec_of()
    record(spec, other_plan(spec))
    env = child_env(**{wisdom.ENV_VAR: str(cache)})
    out = subprocess.run([sys.executable, "-c", code], cwd=str(cache.parent), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(1, 16, 12, 12)" in out.stdout


# -- the cost model's host rates, stored with the plans -------------------------------------------

def _forget_hosts(monkeypatch):
    """A fresh process's cost model: no host measured or read yet."""
    from im2row import costmodel
    monkeypatch.setattr(costmodel, "_hosts", {})


def test_stored_host_rates_are_what_the_cost_model_uses(cache, monkeypatch):
    from im2row import costmodel
    isa = im2row.get_isa()
    rates = {"gemm_flops": 1.5e10, "copy_l2": 3e10, "copy_l3": 2e10, "copy_mem": 1e10,
             "call_s": 2e-6}
    wisdom.store().record_host(isa, rates, cache)
    assert json.loads(cache.read_text())["machines"][wisdom.machine_id()]["hosts"][isa]
    wisdom.store().reset()          # a new process: reads the file
    _forget_hosts(monkeypatch)
    monkeypatch.setattr(costmodel, "measure_host", lambda isa: pytest.fail("measured"))
    assert costmodel.host_rates(costmodel.host(isa)) == rates


def test_plans_and_host_rates_share_the_file(cache):
    spec = spec_of()
    record(spec, other_plan(spec))
    isa = im2row.get_isa()
    wisdom.store().record_host(isa, {name: 1.0 for name in wisdom.HOST_FIELDS}, cache)
    wisdom.store().reset()
    assert choose_plan(spec) == other_plan(spec)
    assert wisdom.store().host(isa) == {name: 1.0 for name in wisdom.HOST_FIELDS}


@pytest.mark.parametrize("bad", [
    "rates", {"gemm_flops": "fast"}, {"gemm_flops": -1.0}, {"gemm_flops": 0},
    {"call_s": True}, {"copy_mem": None}])
def test_bad_host_rates_warn_once_and_are_measured_again(cache, monkeypatch, bad):
    from im2row import costmodel
    isa = im2row.get_isa()
    spec = spec_of()
    record(spec, other_plan(spec))
    wisdom.store().record_host(isa, {name: 1e9 for name in wisdom.HOST_FIELDS}, cache)

    def edit(data):
        group = data["machines"][wisdom.machine_id()]
        group["hosts"][isa] = bad if isinstance(bad, str) else {**group["hosts"][isa], **bad}
    _rewrite(cache, edit)
    wisdom.store().reset()
    _forget_hosts(monkeypatch)
    measured = []
    real = costmodel.measure_host
    monkeypatch.setattr(costmodel, "measure_host", lambda isa: measured.append(isa) or real(isa))
    (plan, host), caught = collect(lambda: (choose_plan(spec), costmodel.host(isa)))
    assert plan == other_plan(spec)          # the plans are still used
    # measured, not the stored figures (a real measurement never gives 1e9 for every rate)
    assert measured == [isa]
    assert costmodel.host_rates(host) != {name: 1e9 for name in wisdom.HOST_FIELDS}
    assert len(caught) == 1 and "host" in str(caught[0].message)


def test_hosts_of_another_shape_are_dropped_with_a_warning(cache):
    spec = spec_of()
    record(spec, other_plan(spec))

    def edit(data):
        data["machines"][wisdom.machine_id()]["hosts"] = ["not", "an", "object"]
    _rewrite(cache, edit)
    wisdom.store().reset()
    plan, caught = collect(lambda: choose_plan(spec))
    assert plan == other_plan(spec) and len(caught) == 1
    assert wisdom.store().host(im2row.get_isa()) is None
