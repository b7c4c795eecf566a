"""The search: one Optuna study per distinct layer shape, results into the plan cache.

Per shape:
1. The space (space.SearchSpace) is every valid plan from plan_space(spec), with fields the
   algorithm ignores pinned.  If it has at most n_trials plans, all are enqueued (exhaustive);
   otherwise the default plan and its one-field alternatives are enqueued and a seeded TPE
   sampler (multivariate, conditional groups) proposes the rest.
2. A trial builds the plan, checks its output against the default plan's on the same input
   (a mismatch can never win), then times `repeats` samples, reporting the running minimum
   after each; RelativePruner cuts a candidate as soon as it is clearly slower than the best
   so far (1.5x after one sample, 1.25x after two, 1.1x later).  A plan proposed twice is not
   measured again: it gets its earlier value, and an unmeasured plan next to it is queued.
3. Finalists (the best few distinct plans by minimum, and by median, so that a plan that is
   fast only now and then cannot slip through) and the default are re-timed head-to-head in
   5-11 interleaved rounds (order rotated each round).  Each round gives a paired ratio
   (candidate / default, both timed back to back); a candidate replaces the default only if
   its median ratio is below 1 by more than min_gain and by more than the noise of those
   ratios (NOISE_SIGMAS robust standard deviations): a tie or a win inside the noise keeps
   the default, and the cache records that it did.
4. The plan is stored in the plan cache (im2row.wisdom) under the machine/threads/shape key,
   with the workspace budget it was tuned under (max_workspace: every candidate's workspace
   fits it) and the workspace of the chosen and the default plan.

With `storage` (an Optuna RDB URL or storage object, e.g. JournalStorage), studies are named
from the cache key and the layer key, so several hosts of the same kind tuning one model share
each shape's trials.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import random
import statistics
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field

import optuna

from im2row import costmodel, wisdom
from im2row.layers import collect_layers, unique_specs
from im2row.plan import INPUT_BUDGET, Plan, budget_bytes, workspace_limit
from im2row.spec import ConvSpec

from .measure import Bench, PlanMismatch, resolve_clock, summarize
from .report import LayerResult, TuneReport
from .space import SearchSpace, canonical

DEFAULT_TRIALS = 40
DEFAULT_TIMEOUT = 8.0        # seconds per distinct shape, search and final re-timing together
DEFAULT_REPEATS = 5
FINAL_SHARE = 0.2            # of the timeout, kept for the head-to-head
FINALISTS = 3
MIN_GAIN = 0.01
PRUNE_RATIOS = (1.5, 1.25, 1.1)
MAX_DUPLICATE_STREAK = 12
FINAL_ROUNDS = (5, 11)       # interleaved rounds of the head-to-head: at least, at most
NOISE_SIGMAS = 2.0           # a win must exceed this many robust sigmas of the paired ratios
IQR_TO_SIGMA = 1 / 1.349     # interquartile range -> standard deviation (normal data)


class RelativePruner(optuna.pruners.BasePruner):
    """Prune a trial whose running-minimum time is `ratio` x slower than the best complete
    trial of the study (ratios per step: looser after one sample, tighter later)."""

    def __init__(self, ratios=PRUNE_RATIOS):
        self.ratios = tuple(ratios)

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        try:
            best = study.best_value
        except ValueError:  # no complete trial yet
            return False
        ratio = self.ratios[min(step, len(self.ratios) - 1)]
        return trial.intermediate_values[step] > best * ratio


@dataclass
class ShapeOutcome:
    plan: Plan
    time: float
    default_plan: Plan
    default_time: float
    trials: int
    space_size: int
    exhaustive: bool
    rejected: list = field(default_factory=list)   # (plan, reason) of failing candidates
    finalists: dict = field(default_factory=dict)  # plan -> (min, median) in the head-to-head
    rounds: int = 0
    max_workspace: int | None = None   # the budget in bytes (None: no limit)
    workspace: int = 0                 # bytes of the chosen plan
    default_workspace: int = 0
    gain: float = 0.0                  # 1 - median paired ratio of the best contender
    noise: float = 0.0                 # robust sigma of those ratios
    decision: str = ""


def paired_gain(candidate: list, default: list) -> tuple:
    """(gain, noise) of a candidate against the default from interleaved rounds: gain is
    1 - the median of the per-round ratios candidate/default, noise their robust sigma
    (interquartile range / 1.349: a candidate that is much faster in half the rounds and
    much slower in the others has a large one)."""
    ratios = [c / d for c, d in zip(candidate, default) if d > 0]
    if len(ratios) < 2:
        return 0.0, math.inf
    quartiles = statistics.quantiles(ratios, n=4, method="inclusive")
    return 1.0 - statistics.median(ratios), (quartiles[2] - quartiles[0]) * IQR_TO_SIGMA


def study_name(spec: ConvSpec, threads: int) -> str:
    key = wisdom.plan_key(spec, threads, _active_isa())
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"im2row-{wisdom.machine_id()}-{digest}"


def _active_isa() -> str:
    from im2row import hwinfo
    return hwinfo.get_isa()


def _plan_id(plan: Plan) -> str:
    return "|".join(f"{k}={v}" for k, v in plan.to_dict().items())


@contextlib.contextmanager
def _quiet_optuna():
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def tune_shape(spec: ConvSpec, **options) -> ShapeOutcome:
    """Search one shape's plans; returns the winner (the default unless beaten).  Options as
    for tune(), plus min_time (shortest timing sample, seconds)."""
    with _quiet_optuna():
        return _tune_shape(spec, **options)


def _tune_shape(spec: ConvSpec, *, n_trials: int = DEFAULT_TRIALS,
               timeout: float | None = DEFAULT_TIMEOUT, threads: int = 1, storage=None,
               seed: int = 0, repeats: int = DEFAULT_REPEATS, clock: str = "auto",
               finalists: int = FINALISTS, min_gain: float = MIN_GAIN,
               min_time: float = 2e-3, max_workspace=INPUT_BUDGET) -> ShapeOutcome:
    started = time.perf_counter()
    spec = spec.oriented()  # what the runtime plans and runs (a column convolution as a row)
    n_trials = max(1, int(n_trials))
    repeats = max(1, int(repeats))
    space = SearchSpace(spec, threads, max_workspace=max_workspace)
    plans = space.plans()
    bench = Bench(spec, threads=threads, seed=seed, clock=clock, min_time=min_time)
    default = space.default
    exhaustive = len(plans) <= n_trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=(seed + zlib.crc32(wisdom.plan_key(spec, threads, _active_isa()).encode()))
            % (2 ** 31),
            n_startup_trials=max(4, min(10, n_trials // 4)), multivariate=True, group=True)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=RelativePruner(),
                                storage=storage,
                                study_name=study_name(spec, threads) if storage is not None else None,
                                load_if_exists=storage is not None)
    if not study.trials:
        seeds = plans if exhaustive else [default] + space.neighbours(default, radius=1)
        for plan in seeds:
            study.enqueue_trial(space.params_of(plan), skip_if_exists=True)

    measured: dict = {}      # plan id -> value (None: rejected or pruned)
    measured_plans: dict = {}  # Plan -> value of the complete ones
    rejected: list = []
    state = {"unique": 0, "dup_streak": 0}
    # Duplicates from other hosts sharing the storage count as measured.
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        pid = t.user_attrs.get("plan_id")
        if pid and t.user_attrs.get("plan"):
            measured.setdefault(pid, t.value)
            with contextlib.suppress(ValueError, TypeError):
                measured_plans.setdefault(Plan.from_dict(t.user_attrs["plan"]), t.value)

    queued = set()
    explore_rng = random.Random(seed)

    def explore_from(plan: Plan) -> None:
        """TPE proposed a plan already measured: queue an unmeasured plan next to it (or next
        to the best so far, or any), so that the budget goes to new plans."""
        known = set(measured) | queued
        pools = [space.neighbours(plan, radius=2)]
        if measured_plans:
            pools.append(space.neighbours(min(measured_plans, key=measured_plans.get), radius=2))
        pools.append(plans)
        for pool in pools:
            fresh = [p for p in pool if _plan_id(p) not in known]
            if fresh:
                choice = fresh[0] if pool is not plans else explore_rng.choice(fresh)
                queued.add(_plan_id(choice))
                study.enqueue_trial(space.params_of(choice), skip_if_exists=True)
                return

    def objective(trial):
        plan = canonical(space.suggest(trial), spec, threads, space)
        pid = _plan_id(plan)
        queued.discard(pid)
        trial.set_user_attr("plan_id", pid)
        trial.set_user_attr("plan", plan.to_dict())
        if pid in measured:
            state["dup_streak"] += 1
            trial.set_user_attr("duplicate", True)
            explore_from(plan)
            value = measured[pid]
            if value is None:
                raise optuna.TrialPruned()
            return value
        state["dup_streak"] = 0
        state["unique"] += 1
        measured[pid] = None
        try:
            run = bench.runner(plan)
            bench.check(run)
        except (PlanMismatch, ValueError, MemoryError, RuntimeError) as exc:
            rejected.append((plan, f"{type(exc).__name__}: {exc}"))
            trial.set_user_attr("rejected", str(exc))
            # Report something clearly bad so that TPE learns to avoid the region.
            trial.report(bench.default_estimate * 100.0, 0)
            raise optuna.TrialPruned()
        best = math.inf
        samples = []
        for step in range(repeats):
            samples.append(bench.sample(run))
            best = min(best, samples[-1])
            trial.report(best, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("median", statistics.median(samples))
        measured[pid] = best
        measured_plans[plan] = best
        return best

    def stopper(study_, _trial):
        if (state["unique"] >= n_trials or len(measured) >= len(plans)
                or state["dup_streak"] >= MAX_DUPLICATE_STREAK):
            study_.stop()

    search_timeout = None if timeout is None else max(0.0, timeout * (1.0 - FINAL_SHARE)
                                                      - (time.perf_counter() - started))
    if search_timeout is None or search_timeout > 0:
        study.optimize(objective, n_trials=max(n_trials * 3, len(plans)) + 10,
                       timeout=search_timeout, callbacks=[stopper])

    # -- finalists: the best distinct plans by minimum and by median, plus the default -------
    best_min, best_med = {}, {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        plan_dict = t.user_attrs.get("plan")
        if plan_dict is None or t.user_attrs.get("duplicate"):
            continue
        try:
            plan = Plan.from_dict(plan_dict)
        except (ValueError, TypeError):
            continue
        median = t.user_attrs.get("median", t.value)
        best_min[plan] = min(t.value, best_min.get(plan, math.inf))
        best_med[plan] = min(median, best_med.get(plan, math.inf))
    # By median too: a plan that is fast only now and then (threads stalling on a busy
    # machine) has a good minimum and a bad median.
    ranked = (sorted(best_min, key=best_min.get)[:finalists]
              + sorted(best_med, key=best_med.get)[:max(1, finalists - 1)])
    contenders = []
    runs = {}
    for plan in dict.fromkeys(ranked):
        if plan == default or not space.fits(plan):  # plans from shared storage may not fit
            continue
        try:
            run = bench.runner(plan)
            bench.check(run)  # plans from other hosts were never checked here
        except (PlanMismatch, ValueError, MemoryError, RuntimeError) as exc:
            rejected.append((plan, f"{type(exc).__name__}: {exc}"))
            continue
        contenders.append(plan)
        runs[plan] = run
    runs[default] = bench.runner(default)
    bench.check(runs[default])
    per_round = sum(best_med.get(p, bench.default_estimate) for p in runs) * bench.inner
    if timeout is None:
        rounds = FINAL_ROUNDS[1]
    else:
        left = timeout - (time.perf_counter() - started)
        rounds = int(left / per_round) if per_round > 0 else FINAL_ROUNDS[1]
    rounds = max(FINAL_ROUNDS[0], min(rounds, FINAL_ROUNDS[1]))
    samples = bench.head_to_head(runs, rounds)
    stats = {plan: summarize(s) for plan, s in samples.items()}
    # The decision is on the paired ratios of interleaved rounds (every contender saw the
    # same drift): the default stays unless beaten by min_gain and by more than the noise.
    d_med = stats[default][1]
    best_gain, best_noise, best = -math.inf, 0.0, None
    for plan in contenders:
        gain, noise = paired_gain(samples[plan], samples[default])
        if gain > best_gain:
            best_gain, best_noise, best = gain, noise, plan
    winner = default
    if best is None:
        decision = "default: no other plan reached the final"
    elif best_gain > min_gain and best_gain > NOISE_SIGMAS * best_noise:
        winner = best
        decision = f"tuned: {best_gain:.1%} faster (noise {best_noise:.1%})"
    else:
        decision = (f"default kept: the best other plan took {1 - best_gain:.3f}x its time "
                    f"(noise {best_noise:.1%}, min_gain {min_gain:.1%})")
    return ShapeOutcome(plan=winner, time=stats[winner][1], default_plan=default,
                        default_time=d_med, trials=state["unique"], space_size=len(plans),
                        exhaustive=exhaustive, rejected=rejected, finalists=stats,
                        rounds=rounds, max_workspace=space.limit,
                        workspace=space.workspace(winner),
                        default_workspace=space.workspace(default),
                        gain=0.0 if best is None else best_gain, noise=best_noise,
                        decision=decision)


class _Progress:
    """tqdm when installed, else one line per shape on stderr."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.done = 0
        self.total = total
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc="tuning", unit="shape", file=sys.stderr,
                                dynamic_ncols=True)

    def start(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(name[:40], refresh=True)

    def finish(self, result: LayerResult) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            print(f"[{self.done}/{self.total}] {result.name}: {result.status}, "
                  f"x{result.speedup:.2f}" if result.speedup else
                  f"[{self.done}/{self.total}] {result.name}: {result.status}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def tune(model_layers, *, n_trials: int = DEFAULT_TRIALS, timeout: float | None = DEFAULT_TIMEOUT,
         threads: int | None = None, cache=None, storage=None, progress: bool = True,
         input_shape=None, seed: int = 0, retune: bool = False, repeats: int = DEFAULT_REPEATS,
         clock: str = "auto", finalists: int = FINALISTS, min_gain: float = MIN_GAIN,
         max_workspace=INPUT_BUDGET) -> TuneReport:
    """Tune every distinct convolution shape of a model and store the plans in the plan cache.

    model_layers: a built-in model name ('resnet50', see im2row.layers.builtin_models()), a
        layer-suite .json path, an .onnx path or onnx ModelProto, a torch nn.Module (with
        input_shape=...), or a list of im2row.LayerSpec / layer dicts / ConvSpec / Conv2d.
        Shapes that occur several times are tuned once.
    n_trials: distinct plans measured per shape at most (spaces this small are searched
        exhaustively).  timeout: seconds per shape (search and final re-timing), None = no limit.
    threads: thread count to tune for (default: im2row's current default); plans are stored
        for, and used at, that thread count only.
    cache: plan cache file to write (default: the user cache, see im2row.wisdom); False keeps
        the plans in memory only.  Plans are usable by Conv2d/conv2d as soon as tune() stores
        them.
    storage: Optuna storage (RDB URL or storage object) shared by several tuning hosts.
    retune: measure shapes again even if the cache already holds a plan for them.
    clock: 'auto' (default: 'cpu' with one thread, else 'wall'), 'wall', or 'cpu' (the calling
        thread's CPU time: robust on a loaded machine, threads=1 only).
    max_workspace: workspace budget per call (INPUT_BUDGET, default: one input image's
        bytes; an int: bytes; None: no limit).  Only plans within it are measured; the cache
        records it, a cached plan tuned under another budget is tuned again, and the runtime
        uses a tuned plan only where it fits the caller's budget.
    Returns a TuneReport (print it for a table)."""
    layers = collect_layers(model_layers, input_shape)
    shapes = unique_specs(layers)
    threads = int(threads) if threads is not None else wisdom.current_threads()
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    for shape in shapes[:1]:   # a budget of the wrong type fails here, not once per shape
        workspace_limit(shape.spec, max_workspace)
    store = wisdom.store()
    if cache is False:
        cache_path = None
    elif cache is None:
        cache_path = wisdom.default_cache_path()
    else:
        cache_path = cache
        store.load(cache_path, explicit=False)
    # The cost model's host rates go into the cache with the plans, once per machine and ISA:
    # every later process ranks the untuned shapes (and these defaults) alike.
    if store.host(_active_isa()) is None:
        store.record_host(_active_isa(), costmodel.host_rates(costmodel.host(_active_isa())),
                          cache_path)
    results = []
    bar = _Progress(len(shapes), progress)
    try:
        for shape in shapes:
            bar.start(shape.name)
            t0 = time.perf_counter()
            entry = None if retune else store.entry(shape.spec, threads)
            if entry is not None and not _same_budget(entry, shape.spec, threads, max_workspace):
                entry = None
            if entry is not None:
                result = LayerResult.from_entry(shape, entry)
            else:
                try:
                    outcome = tune_shape(shape.spec, n_trials=n_trials, timeout=timeout,
                                         threads=threads, storage=storage, seed=seed,
                                         repeats=repeats, clock=clock, finalists=finalists,
                                         min_gain=min_gain, max_workspace=max_workspace)
                except Exception as exc:  # a layer we cannot run: report it, go on
                    result = LayerResult.failed(shape, f"{type(exc).__name__}: {exc}",
                                                time.perf_counter() - t0)
                else:
                    seconds = time.perf_counter() - t0
                    status = "tuned" if outcome.plan != outcome.default_plan else "default"
                    if cache is False:
                        key, entry = store.make_entry(
                            shape.spec, outcome.plan, threads=threads,
                            **_meta(outcome, seconds))
                        store.add({key: entry})
                    else:
                        store.record(shape.spec, outcome.plan, threads=threads, path=cache_path,
                                     **_meta(outcome, seconds))
                    result = LayerResult.from_outcome(shape, outcome, status, seconds)
            results.append(result)
            bar.finish(result)
    finally:
        bar.close()
    return TuneReport(results, threads=threads,
                      cache=None if cache_path is None else str(cache_path),
                      cache_error=store.write_failure(cache_path),
                      settings={"n_trials": n_trials, "timeout": timeout, "repeats": repeats,
                                "clock": resolve_clock(clock, threads), "seed": seed,
                                "max_workspace": _budget_text(max_workspace)})


def _budget_text(max_workspace) -> str | int | None:
    return "input" if max_workspace is INPUT_BUDGET else max_workspace


def _same_budget(entry: dict, spec: ConvSpec, threads: int, max_workspace) -> bool:
    """Was the cached entry tuned under this budget (bytes for this shape)?  Entries from
    before budgets were recorded count as tuned under the default one."""
    recorded = entry.get("max_workspace_bytes", "unrecorded")
    if recorded == "unrecorded":
        return max_workspace is INPUT_BUDGET
    try:
        return recorded == budget_bytes(spec, threads, max_workspace)
    except (TypeError, ValueError):
        return False


def _meta(outcome: ShapeOutcome, seconds: float) -> dict:
    return {"time_s": outcome.time, "default_time_s": outcome.default_time,
            "default_plan": outcome.default_plan.to_dict(), "trials": outcome.trials,
            "space": outcome.space_size, "tuning_s": round(seconds, 3),
            "max_workspace_bytes": outcome.max_workspace,
            "workspace_bytes": outcome.workspace,
            "default_workspace_bytes": outcome.default_workspace,
            "decision": outcome.decision}
