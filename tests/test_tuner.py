"""The auto-tuner (im2row.tuner): search space, selection rules, results, cache, CLI.

No timing assertions: where a test needs a particular plan to be fastest, it replaces the
clock (Bench.sample) with fixed numbers."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

import im2row  # noqa: E402
from im2row import Plan, wisdom  # noqa: E402
from im2row.plan import (choose_plan, default_plan, plan_space, scratch_bytes,  # noqa: E402
                         validate_plan)
from im2row.tuner import SearchSpace, canonical, tune, tune_shape  # noqa: E402
from im2row.tuner import measure  # noqa: E402
from reference import conv2d_reference  # noqa: E402  (tests/ is on sys.path via conftest)

from conftest import NO_SUBPROCESS, child_env  # noqa: E402

FAST = dict(n_trials=6, timeout=3.0, threads=1, progress=False, repeats=2)

TINY_LAYERS = [
    {"name": "conv3x3", "input_shape": [1, 6, 9, 9], "out_channels": 8, "kernel_size": [3, 3],
     "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1, "count": 2},
    {"name": "dw_s2", "input_shape": [1, 8, 9, 9], "out_channels": 8, "kernel_size": 3,
     "stride": 2, "padding": 1, "groups": 8},
    {"name": "pw_s2", "input_shape": [1, 8, 7, 7], "out_channels": 5, "kernel_size": 1,
     "stride": 2},
    {"name": "grouped_dilated", "input_shape": [2, 4, 10, 8], "out_channels": 6,
     "kernel_size": [3, 2], "padding": [2, 1, 1, 0], "dilation": [2, 1], "groups": 2},
]


def spec_of(shape, weight, **conv):
    return im2row.make_spec(shape, weight, **conv)


def conv_args(spec):
    return dict(stride=(spec.stride_h, spec.stride_w),
                padding=(spec.pad_top, spec.pad_left, spec.pad_bottom, spec.pad_right),
                dilation=(spec.dilation_h, spec.dilation_w), groups=spec.groups)


def assert_close_to_reference(y, x, w, b, spec):
    ref = conv2d_reference(x, w, b, **conv_args(spec))
    mag = conv2d_reference(np.abs(x), np.abs(w), np.abs(b), **conv_args(spec))
    assert y.shape == ref.shape
    assert np.all(np.abs(y - ref) <= 1e-5 * mag + 1e-6), np.max(np.abs(y - ref))


# -- the space ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,weight,conv", [
    ((1, 8, 10, 10), (8, 8, 3, 3), dict(padding=1)),
    ((1, 8, 10, 10), (8, 1, 3, 3), dict(padding=1, groups=8)),
    ((1, 8, 10, 10), (4, 8, 1, 1), dict()),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_space_covers_every_plan_field_generically(shape, weight, conv, threads):
    spec = spec_of(shape, weight, **conv)
    space = SearchSpace(spec, threads, max_workspace=None)  # no budget: every plan
    raw = plan_space(spec)
    plan_fields = [f.name for f in fields(Plan)]
    assert set(space.choices) == set(raw) & set(plan_fields)
    plans = space.plans()
    assert plans[0] == space.default == canonical(
        default_plan(spec, threads, max_workspace=None).resolved(), spec, threads)
    assert len(set(plans)) == len(plans)
    for plan in plans:
        validate_plan(spec, plan)
        assert canonical(plan, spec, threads, space) == plan
        if plan.algorithm != "incremental":
            assert plan.column_block == Plan().column_block
    # every value of every field shows up in some plan (nothing silently left out)
    for name, values in space.choices.items():
        if name == "parallel" and threads == 1:
            continue
        if name == "gemm" and all(p.algorithm == "depthwise" for p in plans):
            continue
        assert {getattr(p, name) for p in plans} >= set(values) - {0}, name
    # suggest() and params_of() agree on every plan
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for plan in plans[:25]:
        study.enqueue_trial(space.params_of(plan))
    got = []
    study.optimize(lambda t: got.append(canonical(space.suggest(t), spec, threads, space)) or 0.0,
                   n_trials=min(25, len(plans)))
    assert got == plans[:25]


def test_column_block_only_for_incremental():
    spec = spec_of((1, 4, 12, 12), (4, 4, 3, 3), padding=1)
    space = SearchSpace(spec, 1, max_workspace=None)
    blocks = {p.column_block for p in space.plans() if p.algorithm == "incremental"}
    assert blocks == set(space.choices["column_block"])
    assert {p.column_block for p in space.plans() if p.algorithm != "incremental"} == {0}


# -- selection rules (clock replaced) ---------------------------------------------------------------

def fake_clock(monkeypatch, times):
    """Bench.sample returns times(plan) instead of measuring."""
    monkeypatch.setattr(measure.Bench, "sample", lambda self, run: times(run.plan))


def test_default_kept_on_a_tie(monkeypatch, cache):
    spec = spec_of((1, 4, 8, 8), (4, 4, 3, 3), padding=1)
    fake_clock(monkeypatch, lambda plan: 1e-3)
    out = tune_shape(spec, n_trials=8, timeout=None, threads=1, repeats=2)
    assert out.plan == out.default_plan


def test_faster_plan_wins_and_slow_ones_are_pruned(monkeypatch, cache):
    spec = spec_of((1, 4, 8, 8), (4, 4, 3, 3), padding=1)
    space = SearchSpace(spec, 1)
    target = space.plans()[-1]  # some plan other than the default, within the budget
    fake_clock(monkeypatch, lambda plan: 0.5e-3 if plan == target
               else (1e-3 if plan == space.default else 5e-3))
    storage = optuna.storages.InMemoryStorage()
    out = tune_shape(spec, n_trials=len(space), timeout=None, threads=1, repeats=3,
                     storage=storage)
    assert out.exhaustive and out.trials == len(space)
    assert out.plan == target
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) >= len(space) - 3


def _paired_clock(monkeypatch, times):
    """Bench.sample returns times(plan, round) with round = how often that plan was sampled
    (every plan gets one sample per round of the head-to-head)."""
    seen = {}

    def sample(self, run):
        seen[run.plan] = seen.get(run.plan, -1) + 1
        return times(run.plan, seen[run.plan])
    monkeypatch.setattr(measure.Bench, "sample", sample)


def _challenger(spec):
    space = SearchSpace(spec, 1)
    return space, next(p for p in space.plans() if p != space.default)


@pytest.mark.parametrize("case", ["tie", "noisy win", "inside noise", "real win"])
def test_final_retiming_keeps_the_default_unless_beaten_beyond_noise(monkeypatch, cache, case):
    """Paired ratios of the interleaved final rounds decide: a tie, a 'win' that is as often
    a loss, or a gain smaller than the ratios' spread keeps the default; a consistent win
    replaces it.  The default is stored either way, with the decision."""
    spec = spec_of((1, 4, 8, 8), (4, 4, 3, 3), padding=1)
    space, other = _challenger(spec)
    noisy = [0.55, 1.5, 0.6, 1.45, 0.5, 1.4, 0.6, 1.5, 0.55, 1.45, 0.6]   # median 0.6, wild
    spread = [0.9, 1.05, 0.93, 1.04, 0.92, 1.06, 0.9, 1.05, 0.91, 1.06, 0.95]  # ~4% gain, +-7%
    ratio = {"tie": lambda r: 1.0, "noisy win": lambda r: noisy[r % len(noisy)],
             "inside noise": lambda r: spread[r % len(spread)], "real win": lambda r: 0.8}[case]

    def times(plan, r):
        if plan == space.default:
            return 1e-3
        return 1e-3 * ratio(r) if plan == other else 5e-3
    _paired_clock(monkeypatch, times)
    out = tune_shape(spec, n_trials=len(space), timeout=None, threads=1, repeats=1)
    if case == "real win":
        assert out.plan == other and out.decision.startswith("tuned")
    else:
        assert out.plan == out.default_plan and out.decision.startswith("default kept"), (
            out.decision)
    report = tune([im2row.layers.LayerSpec.from_spec(spec, "x")], n_trials=len(space),
                  timeout=None, threads=1, progress=False, repeats=1, retune=True)
    entry = wisdom.store().entry(spec, 1)
    assert entry["decision"] == report.layers[0].decision
    assert Plan.from_dict(entry["plan"]) == (other if case == "real win" else space.default)
    assert report.layers[0].status == ("tuned" if case == "real win" else "default")


def test_paired_gain_and_noise():
    from im2row.tuner.search import paired_gain
    gain, noise = paired_gain([0.8] * 5, [1.0] * 5)
    assert gain == pytest.approx(0.2) and noise == 0
    gain, noise = paired_gain([1.0, 2.0, 1.0, 2.0], [1.0, 1.0, 2.0, 2.0])
    assert gain == 0 and noise > 0.2
    assert paired_gain([1.0], [1.0])[1] == float("inf")   # one round: no noise estimate


@pytest.mark.parametrize("threads", [1, 2])
def test_space_and_tune_within_every_budget(cache, threads):
    spec = spec_of((1, 8, 12, 12), (8, 8, 3, 3), padding=1)
    unlimited = SearchSpace(spec, threads, max_workspace=None).plans()
    sizes = sorted({SearchSpace(spec, threads).workspace(p) for p in unlimited})
    for budget in (sizes[0], sizes[len(sizes) // 2], spec.input_bytes, None):
        space = SearchSpace(spec, threads, max_workspace=budget)
        assert space.plans() and space.plans()[0] == space.default
        assert all(space.workspace(p) <= (budget if budget is not None else float("inf"))
                   for p in space.plans())
        assert {p for p in unlimited if budget is None or space.workspace(p) <= budget} == \
            set(space.plans())
    budget = sizes[len(sizes) // 2]
    report = tune([im2row.layers.LayerSpec.from_spec(spec, "c")], max_workspace=budget,
                  **{**FAST, "threads": threads})
    result = report.layers[0]
    assert result.status in ("tuned", "default"), result.error
    assert result.workspace <= budget and result.default_workspace <= budget
    assert result.max_workspace == budget
    assert "ws KB" in str(report) and "budget KB" in str(report)
    entry = wisdom.store().entry(spec, threads)
    assert entry["max_workspace_bytes"] == budget
    assert scratch_bytes(spec, Plan.from_dict(entry["plan"]), threads) <= budget
    # Cached under that budget: reused for it, tuned again for another.
    again = tune([im2row.layers.LayerSpec.from_spec(spec, "c")], max_workspace=budget,
                 **{**FAST, "threads": threads})
    assert again.layers[0].status == "cached"
    other = tune([im2row.layers.LayerSpec.from_spec(spec, "c")], max_workspace=None,
                 **{**FAST, "threads": threads})
    assert other.layers[0].status in ("tuned", "default")
    assert wisdom.store().entry(spec, threads)["max_workspace_bytes"] is None


def test_tune_budget_nothing_fits_is_reported(cache):
    report = tune(TINY_LAYERS[:1], max_workspace=0, **FAST)
    assert report.layers[0].status == "failed"
    assert "max_workspace" in report.layers[0].error
    with pytest.raises(TypeError, match="max_workspace"):
        tune(TINY_LAYERS[:1], max_workspace="1MB", **FAST)


def test_wrong_results_never_win(monkeypatch, cache):
    """A candidate whose output differs from the default plan's is rejected, however fast."""
    spec = spec_of((1, 4, 8, 8), (4, 4, 3, 3), padding=1)
    original = measure.Bench.runner

    def runner(self, plan):
        run = original(self, plan)
        if plan == canonical(default_plan(spec, 1), spec, 1):
            return run

        def broken():
            run()
            self.out.flat[0] += 1.0
        broken.plan = plan
        return broken

    monkeypatch.setattr(measure.Bench, "runner", runner)
    default = canonical(default_plan(spec, 1), spec, 1)
    fake_clock(monkeypatch, lambda plan: 1e-3 if plan == default else 1e-6)
    out = tune_shape(spec, n_trials=10, timeout=None, threads=1, repeats=2)
    assert out.plan == out.default_plan
    assert out.rejected and all("relative error" in why for _, why in out.rejected)


def test_shared_storage_resumes_the_study(monkeypatch, cache, tmp_path):
    spec = spec_of((1, 4, 8, 8), (4, 4, 3, 3), padding=1)
    fake_clock(monkeypatch, lambda plan: 1e-3)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    first = tune_shape(spec, n_trials=5, timeout=None, threads=1, repeats=1, storage=url)
    second = tune_shape(spec, n_trials=5, timeout=None, threads=1, repeats=1, storage=url)
    names = optuna.get_all_study_names(url)
    assert len(names) == 1 and names[0].startswith(f"im2row-{wisdom.machine_id()}-")
    study = optuna.load_study(study_name=names[0], storage=url)
    plan_ids = [t.user_attrs["plan_id"] for t in study.trials
                if not t.user_attrs.get("duplicate")]
    assert len(plan_ids) == len(set(plan_ids)) == first.trials + second.trials


# -- tune() end to end ---------------------------------------------------------------------------

def test_tune_tiny_layers_results_match_reference(cache, rng):
    report = tune(TINY_LAYERS, **FAST)
    assert [r.name for r in report] == [layer["name"] for layer in TINY_LAYERS]
    assert all(r.status in ("tuned", "default") for r in report), [r.error for r in report]
    assert report.layers[0].count == 2
    table = str(report)
    assert "speedup" in table and "conv3x3" in table and "total" in table
    assert json.loads(json.dumps(report.to_dict()))["layers"][0]["name"] == "conv3x3"
    stored = json.loads(cache.read_text())["machines"][wisdom.machine_id()]["plans"]
    assert len(stored) == len(TINY_LAYERS)
    previous = getattr(sys.modules.get("im2row._threads"), "_num_threads", None)
    im2row.set_num_threads(1)  # the thread count the plans were tuned for
    try:
        for r in report:
            spec = r.spec
            assert choose_plan(spec.with_batch(1)) == r.plan  # what Conv2d will use
            x = rng.uniform(-1, 1, spec.input_shape).astype(np.float32)
            w = rng.uniform(-1, 1, spec.weight_shape).astype(np.float32)
            b = rng.uniform(-1, 1, spec.out_channels).astype(np.float32)
            layer = im2row.Conv2d(w, b, **conv_args(spec))
            y = layer(x)
            assert layer.plan == r.plan
            assert_close_to_reference(y, x, w, b, spec)
    finally:
        im2row.set_num_threads(previous)


def test_tune_two_threads(cache, rng):
    layer = dict(TINY_LAYERS[0], name="two_threads")
    report = tune([layer], **{**FAST, "threads": 2})
    r = report.layers[0]
    assert r.status in ("tuned", "default") and report.threads == 2
    x = rng.uniform(-1, 1, r.spec.input_shape).astype(np.float32)
    w = rng.uniform(-1, 1, r.spec.weight_shape).astype(np.float32)
    b = np.zeros(r.spec.out_channels, np.float32)
    y = im2row.conv2d(x, w, b, plan=r.plan, **conv_args(r.spec))
    assert_close_to_reference(y, x, w, b, r.spec)


def test_cached_shapes_not_retuned(cache):
    first = tune(TINY_LAYERS[:1], **FAST)
    again = tune(TINY_LAYERS[:1], **FAST)
    assert again.layers[0].status == "cached"
    assert again.layers[0].plan == first.layers[0].plan
    forced = tune(TINY_LAYERS[:1], retune=True, **FAST)
    assert forced.layers[0].status in ("tuned", "default")


def test_tune_stores_the_cost_models_host_once(cache, monkeypatch):
    """The host rates the cost model ranked with go into the cache beside the plans, so that
    a later process ranks untuned shapes alike; a second tune keeps them."""
    from im2row import costmodel
    isa = im2row.get_isa()
    monkeypatch.setattr(costmodel, "_hosts", {})
    tune(TINY_LAYERS[:1], **FAST)
    stored = json.loads(cache.read_text())["machines"][wisdom.machine_id()]["hosts"][isa]
    assert {k: stored[k] for k in wisdom.HOST_FIELDS} == costmodel.host_rates(costmodel.host(isa))
    wisdom.store().reset()
    monkeypatch.setattr(costmodel, "_hosts", {})
    monkeypatch.setattr(costmodel, "measure_host", lambda isa: pytest.fail("measured again"))
    tune(TINY_LAYERS[1:2], **FAST)
    again = json.loads(cache.read_text())["machines"][wisdom.machine_id()]["hosts"][isa]
    assert again == stored


def test_cache_false_keeps_plans_in_memory(cache):
    report = tune(TINY_LAYERS[2:3], cache=False, **FAST)
    assert not cache.exists()
    assert report.cache is None
    assert wisdom.store().entry(report.layers[0].spec, 1) is not None


def test_explicit_cache_file(cache, tmp_path):
    target = tmp_path / "elsewhere.json"
    tune(TINY_LAYERS[2:3], cache=target, **FAST)
    assert target.is_file() and not cache.exists()


def test_failed_layer_reported_not_raised(cache, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr("im2row.tuner.search.tune_shape", explode)
    report = tune(TINY_LAYERS[:1], **FAST)
    assert report.layers[0].status == "failed" and "boom" in report.layers[0].error
    assert "failed" in str(report)


# -- CLI --------------------------------------------------------------------------------------------

def test_cli_info(capsys, cache):
    from im2row.__main__ import main
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "kernel ISAs" in out and "BLAS" in out and str(cache) in out


def test_cli_tune_in_process(capsys, cache, tmp_path):
    from im2row.__main__ import main
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(TINY_LAYERS[:2]))
    report = tmp_path / "report.json"
    code = main(["tune", str(suite), "--trials", "4", "--timeout", "2", "--threads", "1",
                 "--repeats", "1", "--cache", str(cache), "--no-progress", "--json", str(report)])
    assert code == 0
    out = capsys.readouterr().out
    assert "conv3x3" in out and "dw_s2" in out
    assert len(json.loads(report.read_text())["layers"]) == 2
    assert main(["info", "--cache", str(cache)]) == 0
    assert "2 plan(s) for this machine" in capsys.readouterr().out


def test_cli_run_uses_tuned_plans(capsys, cache, tmp_path):
    """`run` after `tune`: every shape runs its cached plan and matches the check path."""
    from im2row.__main__ import main
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(TINY_LAYERS[:3]))
    assert main(["tune", str(suite), "--trials", "3", "--timeout", "2", "--threads", "1",
                 "--repeats", "1", "--cache", str(cache), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["run", str(suite), "--threads", "1", "--repeats", "1", "--cache",
                 str(cache)]) == 0
    out = capsys.readouterr().out
    assert "3 distinct shapes (3 tuned)" in out and "(ok," in out


def test_cli_run_reports_a_wrong_result(capsys, tmp_path, monkeypatch):
    """The run check can fail: a layer whose output is corrupted is reported, exit 1."""
    from im2row import modelrun
    from im2row.__main__ import main
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(TINY_LAYERS[:1]))
    real_call = modelrun.Conv2d.__call__

    def corrupt(self, x, **kw):
        y = real_call(self, x, **kw)
        if self._forced_plan is not None and self._forced_plan.algorithm != "classic":
            y.flat[0] += 1.0
        return y

    monkeypatch.setattr(modelrun.Conv2d, "__call__", corrupt)
    assert main(["run", str(suite), "--threads", "1", "--repeats", "1"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_cli_unknown_command(capsys):
    from im2row.__main__ import main
    assert main(["frobnicate"]) == 2


@NO_SUBPROCESS
def test_cli_subprocess_tune_builtin_subset(tmp_path):
    suite = tmp_path / "s.json"
    suite.write_text(json.dumps(TINY_LAYERS[2:3]))
    env = child_env(**{wisdom.ENV_VAR: str(tmp_path / "plans.json")})
    out = subprocess.run([sys.executable, "-m", "im2row", "tune", str(suite), "--trials", "3",
                          "--timeout", "2", "--threads", "1", "--repeats", "1"],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "pw_s2" in out.stdout
    assert (tmp_path / "plans.json").is_file()


CONCURRENT_TUNER = """
import json, sys
import im2row
layers = json.loads(sys.argv[1])
report = im2row.tune(layers, n_trials=3, timeout=2, threads=1, repeats=1, progress=False,
                     cache=sys.argv[2])
print(len(report))
"""


@NO_SUBPROCESS
def test_concurrent_tuners_share_one_cache(tmp_path):
    """Several processes tuning different layers (and one common layer) into one cache file at
    once: every plan ends up in it and the file stays valid JSON."""
    target = tmp_path / "shared" / "plans.json"
    common = TINY_LAYERS[2]
    jobs = [[TINY_LAYERS[0], common], [TINY_LAYERS[1], common], [TINY_LAYERS[3], common]]
    env = child_env(**{wisdom.ENV_VAR: str(tmp_path / "unused.json")})
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_TUNER, json.dumps(job),
                               str(target)], cwd=str(tmp_path), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for job in jobs]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "2"
    data = json.loads(target.read_text())
    plans = data["machines"][wisdom.machine_id()]["plans"]
    want = {im2row.LayerSpec.from_dict(layer).to_spec() for layer in TINY_LAYERS}
    got = {im2row.ConvSpec(**entry["spec"]) for entry in plans.values()}
    assert got == want and len(plans) == len(TINY_LAYERS)
    assert not (tmp_path / "unused.json").exists()


@pytest.mark.parametrize("shape", [
    ((1, 544, 7, 7), (544, 1, 3, 3), dict(padding=1, groups=544)),     # block of 192 channels
    ((1, 96, 112, 112), (96, 1, 3, 3), dict(stride=2, padding=1, groups=96)),  # band of 28 rows
])
def test_search_space_holds_the_cache_sized_depthwise_default(shape):
    """The channel-blocked depthwise default takes its block and band from the caches, values
    off the fixed lists: the space must hold it (the tuner measures it first; params_of once
    raised 'ValueError: 96 is not in list' and the shape failed to tune)."""
    x_shape, w_shape, conv = shape
    spec = im2row.make_spec(x_shape, w_shape, **conv)
    space = SearchSpace(spec, 1)
    blocks = im2row.plan.dw_block_for_l1(spec)
    assert blocks in plan_space(spec)["channel_block"]
    assert im2row.plan.dw_band_rows(spec, blocks) in plan_space(spec)["row_block"]
    assert space.plans()[0] == space.default
    params = space.params_of(space.default)
    trial = optuna.trial.FixedTrial(params)
    assert canonical(space.suggest(trial), spec, 1, space) == space.default
