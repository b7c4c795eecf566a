"""The default plan for NCHW callers against the same default without channels-last
candidates (the NCHW algorithms only), interleaved in one process, on every layer of a suite
where the two differ.  Each plan runs with `out=` preallocated, timed by bench_layers' round
robin: the best per-call time over the rounds, process CPU time at 1 thread, wall clock at
more (bench_layers.resolve_clock).

    python benchmarks/bench_default_layouts.py --suite resnet50 vgg19 --threads 1

A suite's speedup is the geomean over all its unique layers (unchanged layers count 1).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import bench_layers
else:
    from . import bench_layers

import im2row  # noqa: E402
from im2row import costmodel, hwinfo  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", nargs="+", default=["resnet50"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.03)
    args = parser.parse_args()
    print(f"isa {hwinfo.get_isa()}  threads {args.threads}  caches {hwinfo.cache_sizes()}")
    for suite in args.suite:
        ratios, layers = [], collect_layers(suite)
        for layer in layers:
            spec = layer.to_spec()
            new = planning.default_plan(spec, args.threads)
            old = nchw_only_default(spec, args.threads)
            if new == old:
                continue
            t_old, t_new = interleaved(spec, [old, new], args.threads, args.rounds,
                                       args.min_time)
            ratios.append(t_old / t_new)
            print(f"  {layer.name:22s} {layer.in_channels}>{layer.out_channels} "
                  f"{spec.kernel_h}x{spec.kernel_w} s{spec.stride_h} d{spec.dilation_h} "
                  f"@{spec.height}x{spec.width}  NCHW-only {old.algorithm} "
                  f"{t_old * 1e3:.3f} ms  default {new.layout} {new.algorithm} "
                  f"{t_new * 1e3:.3f} ms  x{t_old / t_new:.2f}", flush=True)
        speedup = math.exp(sum(map(math.log, ratios)) / len(layers)) if layers else 1.0
        print(f"{suite}: {len(ratios)}/{len(layers)} layers changed, suite geomean speedup "
              f"x{speedup:.3f}, changed layers min x{min(ratios, default=1):.2f} "
              f"max x{max(ratios, default=1):.2f}", flush=True)


if __name__ == "__main__":
    main()
