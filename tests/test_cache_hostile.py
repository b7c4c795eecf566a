"""Malformed, hostile and unwritable plan caches (issue 13): every one gives one clear warning
that names the problem (bad entries by their key), is never applied, and never stops a
convolution, a save, a tuner run or `python -m im2row info`."""
from __future__ import annotations

import json
import os
import threading
import warnings

import numpy as np
import pytest

import im2row
from im2row import Plan, wisdom
from im2row.plan import choose_plan, default_plan


def spec_of(shape=(1, 8, 12, 12), weight=(16, 8, 3, 3)):
    return im2row.make_spec(shape, weight, padding=1)


def other_plan(spec) -> Plan:
    plan = Plan("classic", gemm="packed", isa=im2row.available_isas()[-1])
    assert plan != default_plan(spec)
    return plan


def collect(func):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = func()
    return result, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def document(plans: dict) -> dict:
    return {"format": wisdom.FORMAT, "schema": wisdom.SCHEMA,
            "machines": {wisdom.machine_id(): {"identity": wisdom.machine_identity(),
                                               "plans": plans}}}


def good_entry(spec=None):
    spec = spec or spec_of()
    return wisdom.store().make_entry(spec, other_plan(spec), threads=wisdom.current_threads(),
                                     time_s=1e-3, default_time_s=2e-3)


def conv_runs(spec):
    x = np.ones(spec.input_shape, np.float32)
    w = np.ones(spec.weight_shape, np.float32)
    return im2row.conv2d(x, w, padding=1).shape == spec.output_shape


# -- entries that are not objects -------------------------------------------------------------

@pytest.mark.parametrize("bad", [1, [1], "plan", None], ids=repr)
def test_non_object_entry_reported_once_and_never_breaks_later_calls(cache, tmp_path, bad):
    key, entry = good_entry()
    cache.write_text(json.dumps(document({"k": bad, key: entry})))
    (first, second), caught = collect(lambda: (im2row.load_plans(cache), im2row.load_plans(cache)))
    assert first == second == 1                           # the good entry is used
    assert len(caught) == 1 and "'k'" in caught[0] and "invalid plan entry" in caught[0]
    assert choose_plan(spec_of()) == other_plan(spec_of())
    # what the issue saw raise AttributeError: saving, recording, a fresh read
    shipped = tmp_path / "shipped.json"
    assert collect(lambda: im2row.save_plans(shipped))[0] == 1
    spec2 = spec_of(shape=(1, 8, 12, 13))
    collect(lambda: wisdom.record_plan(spec2, other_plan(spec2), threads=1, path=cache))
    written = json.loads(cache.read_text())["machines"][wisdom.machine_id()]["plans"]
    assert "k" not in written and key in written and len(written) == 2
    wisdom.store().reset()
    assert choose_plan(spec_of()) == other_plan(spec_of())


# -- numbers and nesting that Python's json accepts but a cache never holds ------------------

@pytest.mark.parametrize("text", ["Infinity", "-Infinity", "NaN", "1e400", "2.0", "true", "0"])
def test_odd_thread_count_is_a_bad_entry(cache, text):
    key, entry = good_entry()
    raw = json.dumps(document({key: {**entry, "threads": "@@"}})).replace('"@@"', text)
    cache.write_text(raw)
    count, caught = collect(lambda: im2row.load_plans(cache))
    assert count == 0 and choose_plan(spec_of()) == default_plan(spec_of())
    assert len(caught) == 1 and repr(key) in caught[0] or "not a JSON number" in caught[0]
    spec = spec_of()
    collect(lambda: wisdom.record_plan(spec, other_plan(spec), threads=1, path=cache))
    assert json.loads(cache.read_text())["schema"] == wisdom.SCHEMA


def test_deeply_nested_file(cache, capsys):
    cache.write_text("[" * 100000 + "]" * 100000)
    count, caught = collect(lambda: im2row.load_plans(cache))
    assert count == 0 and len(caught) == 1 and "nested" in caught[0]
    assert "nested" in wisdom.cache_summary(cache)["problem"]
    from im2row.__main__ import main
    assert main(["info", "--cache", str(cache)]) == 0
    assert "nested" in capsys.readouterr().out
    spec = spec_of()
    _, caught = collect(lambda: wisdom.record_plan(spec, other_plan(spec), threads=1, path=cache))
    assert caught == []                                   # one warning per file
    wisdom.store().reset()
    cache.write_text("[" * 100000 + "]" * 100000)
    _, caught = collect(lambda: wisdom.record_plan(spec, other_plan(spec), threads=1, path=cache))
    assert len(caught) == 1 and "nested" in caught[0]
    assert json.loads(cache.read_text())["schema"] == wisdom.SCHEMA   # replaced
    wisdom.store().reset()
    assert choose_plan(spec, 1) == other_plan(spec)


def test_nesting_inside_an_entry_is_bounded(cache):
    key, entry = good_entry()
    nested = json.dumps(document({key: {**entry, "note": "@@"}})).replace(
        '"@@"', "[" * 500 + "]" * 500)
    cache.write_text(nested)
    count, caught = collect(lambda: im2row.load_plans(cache))
    assert count == 0 and len(caught) == 1 and "nested" in caught[0]


# -- files that are not files -------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_at_the_cache_path_does_not_hang(cache):
    os.mkfifo(cache)
    spec = spec_of()
    done = {}

    def first_call():
        done["result"] = collect(lambda: conv_runs(spec))

    worker = threading.Thread(target=first_call, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the first conv2d() hangs on a FIFO plan cache"
    ok, caught = done["result"]
    assert ok and len(caught) == 1 and "not a regular file" in caught[0]
    # a writer leaves it alone instead of replacing or blocking on it (already warned)
    _, caught = collect(lambda: wisdom.record_plan(spec, other_plan(spec), threads=1))
    assert caught == [] and "not a regular file" in wisdom.store().write_failure(cache)
    assert not cache.is_file() and cache.exists()


# -- plans that are not valid ----------------------------------------------------------------------

BAD_PLANS = {
    "unknown algorithm": {"algorithm": "winograd"},
    "negative block": {"column_block": -3},
    "huge block": {"column_block": 10**30},
    "float block": {"row_block": 2.5},
    "string block": {"channel_block": "4"},
    "bool block": {"column_block": True},
    "unknown isa": {"isa": "sse9"},
    "unknown field": {"speed": "fast"},
    "not an object": None,
}


@pytest.mark.parametrize("kind", sorted(BAD_PLANS))
def test_invalid_plan_reported_with_its_key_and_never_applied(cache, kind):
    spec = spec_of()
    key, entry = good_entry(spec)
    good_key, good = good_entry(spec_of(shape=(1, 8, 12, 13)))
    edit = BAD_PLANS[kind]
    entry["plan"] = None if edit is None else {**entry["plan"], **edit}
    cache.write_text(json.dumps(document({key: entry, good_key: good})))
    (plans, count), caught = collect(lambda: ([choose_plan(spec) for _ in range(3)],
                                              wisdom.store().count()))
    assert plans == [default_plan(spec)] * 3
    assert count == 1 and wisdom.store().entry(spec, wisdom.current_threads()) is None
    assert len(caught) == 1 and repr(key) in caught[0], caught
    assert choose_plan(spec_of(shape=(1, 8, 12, 13))) == other_plan(spec)
    assert conv_runs(spec)


def test_entry_filed_under_another_key_is_bad(cache):
    spec = spec_of()
    key, entry = good_entry(spec)
    cache.write_text(json.dumps(document({key.replace("|t=", "|t=9"): entry})))
    plan, caught = collect(lambda: choose_plan(spec))
    assert plan == default_plan(spec) and len(caught) == 1 and "key" in caught[0]


def test_invalid_spec_is_bad(cache):
    key, entry = good_entry()
    entry["spec"] = {**entry["spec"], "kernel_h": 99}         # larger than the padded input
    cache.write_text(json.dumps(document({key: entry})))
    count, caught = collect(lambda: im2row.load_plans(cache))
    assert count == 0 and len(caught) == 1 and repr(key) in caught[0]


# -- caches that cannot be written --------------------------------------------------------------------

def _read_only(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(wisdom.os, "replace", refuse)


UNWRITABLE = {
    "directory at the path": lambda path, mp: path.mkdir(),
    "parent is a file": lambda path, mp: path.parent.joinpath("file").write_text("x"),
    "read-only filesystem": lambda path, mp: _read_only(mp),
}


def _unwritable_path(cache, kind, monkeypatch):
    UNWRITABLE[kind](cache, monkeypatch)
    return cache.parent / "file" / "plans.json" if kind == "parent is a file" else cache


@pytest.mark.parametrize("kind", sorted(UNWRITABLE))
def test_save_and_record_survive_an_unwritable_cache(cache, kind, monkeypatch):
    path = _unwritable_path(cache, kind, monkeypatch)
    spec = spec_of()
    _, caught = collect(lambda: [wisdom.record_plan(spec, other_plan(spec), threads=1, path=path)
                                 for _ in range(2)])
    assert sum("cannot write" in m or "not a regular file" in m for m in caught) == 1, caught
    assert choose_plan(spec, 1) == other_plan(spec)          # kept in memory
    assert wisdom.store().write_failure(path)
    written, caught = collect(lambda: im2row.save_plans(path))
    assert written == 0 and len(caught) == 1 and "kept in memory" in caught[0]


@pytest.mark.parametrize("kind", sorted(UNWRITABLE))
def test_tune_survives_an_unwritable_cache(cache, kind, monkeypatch):
    pytest.importorskip("optuna")
    path = _unwritable_path(cache, kind, monkeypatch)
    layers = [{"name": "a", "input_shape": [1, 4, 6, 6], "out_channels": 4, "kernel_size": 3,
               "padding": 1},
              {"name": "b", "input_shape": [1, 4, 7, 7], "out_channels": 4, "kernel_size": 1}]
    report, caught = collect(lambda: im2row.tune(layers, cache=path, n_trials=2, timeout=2.0,
                                                 threads=1, progress=False, repeats=1))
    assert [r.status for r in report.layers] != ["failed"] * 2
    assert all(r.status in ("tuned", "default") for r in report.layers), str(report)
    assert report.cache_error and report.cache_error in str(report)
    assert report.to_dict()["cache_error"] == report.cache_error
    assert len(caught) == 1, caught
    for r in report.layers:
        assert wisdom.store().entry(r.spec, 1) is not None     # plans kept in memory
