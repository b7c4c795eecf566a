"""The default plan against a baseline, interleaved in one process, on every layer of a suite
where the two differ.  The baseline is the same default without channels-last candidates (the
NCHW algorithms only), or with --against the defaults another checkout dumped (--dump), so a
planner or cost-model change is measured against the commit before it.  Each plan runs with
`out=` preallocated, timed by bench_layers' round robin: the best per-call time over the rounds,
process CPU time at 1 thread, wall clock at more (bench_layers.resolve_clock).

    python benchmarks/bench_default_ab.py --suite resnet50 vgg19 --threads 1

Against an older commit (its checkout built in /tmp/base; the host the cost model sees pinned
in one plan cache file, so both processes decide on the same rates):

    export IM2ROW_PLAN_CACHE=/tmp/ab-host.json
    (cd /tmp/base && python /work/main/benchmarks/bench_default_ab.py --suite vgg19 \
        --dump /tmp/base-plans.json)
    python benchmarks/bench_default_ab.py --suite vgg19 --against /tmp/base-plans.json

A suite's speedup is the geomean over all its unique layers (unchanged layers count 1).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    # the benchmarks package from beside this file; im2row from the working directory's
    # checkout (a baseline's, for --dump) when it has one, else from beside this file
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path.cwd()))
    from benchmarks import bench_layers
else:
    from . import bench_layers

import im2row  # noqa: E402
from im2row import costmodel, hwinfo, wisdom  # noqa: E402
from im2row import plan as planning  # noqa: E402
from im2row.layers import collect_layers  # noqa: E402


def interleaved(spec, plans, threads: int, rounds: int, min_time: float) -> list:
    """Best seconds per call of each plan on random operands, the plans taking turns."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.input_shape, dtype=np.float32)
    w = rng.standard_normal((spec.out_channels, spec.group_in_channels, spec.kernel_h,
                             spec.kernel_w), dtype=np.float32)
    layers = [im2row.Conv2d.from_spec(spec, w, plan=p, threads=threads) for p in plans]
    outs = [layer(x) for layer in layers]
    fns = {i: (lambda layer=layer, out=out: layer(x, out=out))
           for i, (layer, out) in enumerate(zip(layers, outs))}
    iters = {i: bench_layers._inner_iterations(fn, min_time) for i, fn in fns.items()}
    samples = bench_layers._time_round_robin(fns, iters, rounds, layer_cap=math.inf)
    clock = 1 if bench_layers.resolve_clock("auto", threads) == "cpu" else 0
    return [min(pair[clock] for pair in samples[i]) for i in fns]


def nchw_only_default(spec, threads: int):
    """What default_plan picks when only NCHW candidates are offered."""
    image = spec.with_batch(1)
    limit = planning.budget_bytes(image, threads)
    candidates = [p for p in planning.default_candidates(image, hwinfo.get_isa(), threads)
                  if p.layout == "NCHW" and planning.within_budget(image, p, threads, limit)]
    return costmodel.best_plan(image, candidates, threads)


def pinned_host() -> str:
    """Make the cost model's host rates the ones stored in the plan cache file
    ($IM2ROW_PLAN_CACHE), measuring and storing them there first if it has none: every process
    pointed at that file then plans on the same rates.  Returns where the rates came from."""
    isa = hwinfo.get_isa()
    path = wisdom.default_cache_path()
    if wisdom.store().host(isa) is not None:
        return f"stored in {path}"
    rates = costmodel.host_rates(costmodel.host(isa))
    if path is None:
        return "measured now (IM2ROW_PLAN_CACHE=off: not pinned)"
    wisdom.store().record_host(isa, rates, path)
    return f"measured now, stored in {path}"


def dump_defaults(suites: list, threads: int, path: str) -> None:
    """{suite: {layer name: default plan}} of this checkout's planner, as JSON."""
    plans = {suite: {layer.name: planning.default_plan(layer.to_spec(), threads).to_dict()
                     for layer in collect_layers(suite)} for suite in suites}
    Path(path).write_text(json.dumps({"threads": threads, "isa": hwinfo.get_isa(),
                                      "plans": plans}, indent=1))
    print(f"wrote {sum(map(len, plans.values()))} default plans to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", nargs="+", default=["resnet50"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.03)
    parser.add_argument("--dump", metavar="FILE", help="write this checkout's default plans "
                        "for the suites to FILE and stop")
    parser.add_argument("--against", metavar="FILE", help="the baseline: plans written by --dump "
                        "(default: this checkout's default restricted to NCHW candidates)")
    args = parser.parse_args()
    print(f"isa {hwinfo.get_isa()}  threads {args.threads}  caches {hwinfo.cache_sizes()}  "
          f"im2row from {Path(im2row.__file__).parent}  host rates {pinned_host()}")
    if args.dump:
        dump_defaults(args.suite, args.threads, args.dump)
        return
    dumped, label = None, "NCHW-only"
    if args.against:
        dumped, label = json.loads(Path(args.against).read_text()), "baseline"
        if (dumped["threads"], dumped["isa"]) != (args.threads, hwinfo.get_isa()):
            raise SystemExit(f"{args.against} holds plans for {dumped['threads']} thread(s), "
                             f"{dumped['isa']}; this run is {args.threads}, {hwinfo.get_isa()}")
    for suite in args.suite:
        ratios, layers = [], collect_layers(suite)
        for layer in layers:
            spec = layer.to_spec()
            new = planning.default_plan(spec, args.threads)
            old = (planning.Plan.from_dict(dumped["plans"][suite][layer.name]) if dumped
                   else nchw_only_default(spec, args.threads))
            if new == old:
                continue
            t_old, t_new = interleaved(spec, [old, new], args.threads, args.rounds,
                                       args.min_time)
            ratios.append(t_old / t_new)
            print(f"  {layer.name:22s} {layer.in_channels}>{layer.out_channels} "
                  f"{spec.kernel_h}x{spec.kernel_w} s{spec.stride_h} d{spec.dilation_h} "
                  f"@{spec.height}x{spec.width}  {label} {old.layout} {old.algorithm} "
                  f"{t_old * 1e3:.3f} ms  default {new.layout} {new.algorithm} "
                  f"{t_new * 1e3:.3f} ms  x{t_old / t_new:.2f}", flush=True)
        speedup = math.exp(sum(map(math.log, ratios)) / len(layers)) if layers else 1.0
        print(f"{suite}: {len(ratios)}/{len(layers)} layers changed, suite geomean speedup "
              f"x{speedup:.3f}, changed layers min x{min(ratios, default=1):.2f} "
              f"max x{max(ratios, default=1):.2f}", flush=True)


if __name__ == "__main__":
    main()
