"""Tuner benchmark: the default budget against an exhaustive search of the same space.

    python benchmarks/bench_tuner.py                      # 5 representative layers, 1 thread
    python benchmarks/bench_tuner.py --threads 2 --clock wall
    python benchmarks/bench_tuner.py --model resnet50     # also: tuning seconds per shape
    python benchmarks/bench_tuner.py --json out.json

Per layer:
1. tuned: im2row.tuner.tune_shape at the default budget (n_trials/timeout), wall seconds spent;
2. exhaustive: every plan of the same space (tuner.space.SearchSpace) checked and timed
   (warm-up + --samples samples, min), on the same Bench as the tuner uses;
3. final: the tuned plan, the exhaustive best and the default re-timed head-to-head in
   --rounds interleaved rounds (order rotated); tuned/best = min(tuned) / min(best), and the
   same with medians.
Targets (issue 4): tuning <= 10 s per distinct shape; tuned within 3% of the exhaustive best.

Timings on a shared machine move; --clock cpu (threads 1) measures the calling thread's CPU
time, which other processes do not inflate.  Nothing is written to the plan cache.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import im2row  # noqa: E402
from im2row.layers import builtin_layers, unique_specs  # noqa: E402
from im2row.tuner import DEFAULT_TIMEOUT, DEFAULT_TRIALS, plan_str, shape_str  # noqa: E402
from im2row.tuner.measure import Bench, PlanMismatch  # noqa: E402
from im2row.tuner.search import tune, tune_shape  # noqa: E402
from im2row.tuner.space import SearchSpace  # noqa: E402

# Five shapes that cover the plan space's regimes: a large-kernel strided stem, an early 3x3,
# a late 3x3 (small spatial, deep K), a 1x1 expansion and a strided depthwise.
REPRESENTATIVE = [("resnet50", "resnet50.0"), ("resnet50", "resnet50.2"),
                  ("resnet50", "resnet50.16"), ("mobilenet_v2", "mobilenet_v2.3"),
                  ("mobilenet_v2", "mobilenet_v2.4")]


def representative_layers() -> list:
    out = []
    for model, name in REPRESENTATIVE:
        layers = {layer.name: layer for layer in builtin_layers(model)}
        out.append(layers[name])
    return out


def exhaustive(bench: Bench, space: SearchSpace, samples: int) -> dict:
    """{plan: min seconds} over every plan of the space (mismatching plans left out)."""
    times = {}
    for plan in space.plans():
        try:
            run = bench.runner(plan)
            bench.check(run)
        except (PlanMismatch, ValueError, MemoryError, RuntimeError):
            continue
        times[plan] = min(bench.sample(run) for _ in range(samples))
    return times


def bench_layer(layer, *, threads: int, clock: str, n_trials: int, timeout: float,
                samples: int, rounds: int, seed: int) -> dict:
    spec = layer.to_spec()
    t0 = time.perf_counter()
    outcome = tune_shape(spec, n_trials=n_trials, timeout=timeout, threads=threads,
                         seed=seed, clock=clock)
    tune_s = time.perf_counter() - t0

    space = SearchSpace(spec, threads)
    bench = Bench(spec, threads=threads, seed=seed + 1, clock=clock)
    t0 = time.perf_counter()
    all_times = exhaustive(bench, space, samples)
    exhaustive_s = time.perf_counter() - t0
    # the exhaustive search's own top 3, re-timed, decide its best
    top = sorted(all_times, key=all_times.get)[:3]
    runs = {p: bench.runner(p) for p in top}
    top_times = bench.head_to_head(runs, rounds)
    best = min(top, key=lambda p: min(top_times[p]))

    contenders = {"tuned": outcome.plan, "best": best, "default": space.default}
    runs = {}
    for label, plan in contenders.items():
        runs[label] = bench.runner(plan)
        bench.check(runs[label])
    final = bench.head_to_head(runs, rounds)
    stats = {label: (min(s), statistics.median(s)) for label, s in final.items()}
    return {
        "layer": layer.name, "shape": shape_str(spec), "space": len(space),
        "trials": outcome.trials, "exhaustive_in_budget": outcome.exhaustive,
        "tune_s": tune_s, "exhaustive_s": exhaustive_s,
        "tuned_plan": outcome.plan.to_dict(), "best_plan": best.to_dict(),
        "default_plan": space.default.to_dict(),
        "tuned_s": stats["tuned"][0], "best_s": stats["best"][0], "default_s": stats["default"][0],
        "tuned_median_s": stats["tuned"][1], "best_median_s": stats["best"][1],
        "default_median_s": stats["default"][1],
        "tuned_over_best": stats["tuned"][0] / stats["best"][0],
        "tuned_over_best_median": stats["tuned"][1] / stats["best"][1],
        "speedup_vs_default": stats["default"][0] / stats["tuned"][0],
        "same_plan": outcome.plan == best,
    }


def _table(rows: list) -> str:
    headers = ["layer", "shape", "space", "trials", "tune s", "tuned plan", "exhaustive best",
               "tuned ms", "best ms", "tuned/best", "(median)", "vs default"]
    lines = []
    for r in rows:
        lines.append([r["layer"], r["shape"], str(r["space"]), str(r["trials"]),
                      f"{r['tune_s']:.1f}", plan_str(im2row.Plan.from_dict(r["tuned_plan"])),
                      plan_str(im2row.Plan.from_dict(r["best_plan"])),
                      f"{r['tuned_s'] * 1e3:.3f}", f"{r['best_s'] * 1e3:.3f}",
                      f"{r['tuned_over_best']:.3f}", f"{r['tuned_over_best_median']:.3f}",
                      f"{r['speedup_vs_default']:.2f}x"])
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(headers)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(x) for x in lines])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto",
                   help="'auto': cpu with --threads 1, else wall")
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    p.add_argument("--samples", type=int, default=3, help="samples per plan, exhaustive search")
    p.add_argument("--rounds", type=int, default=9, help="interleaved rounds, final re-timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", default=None,
                   help="comma-separated model:layer pairs instead of the 5 representative ones")
    p.add_argument("--model", default=None,
                   help="also tune this whole model at the default budget (cache off) and "
                        "report seconds per distinct shape")
    p.add_argument("--skip-exhaustive", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.layers:
        pairs = [tuple(item.split(":", 1)) for item in args.layers.split(",")]
        layers = []
        for model, name in pairs:
            layers += [x for x in builtin_layers(model) if x.name == name]
    else:
        layers = representative_layers()

    ident = im2row.wisdom.machine_identity()
    print(f"im2row {im2row.__version__}, {ident['cpu']}, ISAs {ident['isas']}, "
          f"{ident['blas']['name']} {ident['blas']['version']}, threads {args.threads}, "
          f"clock {args.clock}, budget {args.trials} trials / {args.timeout:g} s", flush=True)
    out = {"settings": vars(args), "machine": ident, "layers": [], "model": None}
    if not args.skip_exhaustive:
        rows = []
        for layer in layers:
            row = bench_layer(layer, threads=args.threads, clock=args.clock,
                              n_trials=args.trials, timeout=args.timeout, samples=args.samples,
                              rounds=args.rounds, seed=args.seed)
            rows.append(row)
            print(f"  {row['layer']}: tuned/best {row['tuned_over_best']:.3f} "
                  f"(tune {row['tune_s']:.1f} s, exhaustive {row['exhaustive_s']:.1f} s)",
                  file=sys.stderr, flush=True)
        out["layers"] = rows
        print(_table(rows))
        worst = max(r["tuned_over_best"] for r in rows)
        geo = math.exp(statistics.mean(math.log(r["tuned_over_best"]) for r in rows))
        worst_med = max(r["tuned_over_best_median"] for r in rows)
        print(f"tuned/best (min): worst {worst:.3f}, geomean {geo:.3f}; (median) worst "
              f"{worst_med:.3f}; tuning s per shape: max "
              f"{max(r['tune_s'] for r in rows):.1f}, mean "
              f"{statistics.mean(r['tune_s'] for r in rows):.1f}")
    if args.model:
        t0 = time.perf_counter()
        report = tune(args.model, n_trials=args.trials, timeout=args.timeout,
                      threads=args.threads, cache=False, progress=False, clock=args.clock,
                      seed=args.seed, retune=True)
        wall = time.perf_counter() - t0
        seconds = [r.seconds for r in report.layers]
        print(report)
        print(f"{args.model}: {len(seconds)} distinct shapes in {wall:.1f} s; per shape max "
              f"{max(seconds):.1f} s, mean {statistics.mean(seconds):.1f} s")
        out["model"] = {"name": args.model, "wall_s": wall, "report": report.to_dict()}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
