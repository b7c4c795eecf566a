"""Per-call cost: a prepared Conv2d call, a one-shot im2row.conv2d() call and torch's F.conv2d,
side by side in one process (interleaved rounds, as bench_layers does).

    python benchmarks/bench_overhead.py                       # the three reference layers, 1 and 2 threads
    python benchmarks/bench_overhead.py --suite resnet50 vgg19 mobilenet_v2 --threads 1
    python benchmarks/bench_overhead.py --markdown out.md

The reference layers are a tiny (16x8x8 -> 16, 3x3), a mid (256x14x14 -> 256, 3x3) and a deep
(512x7x7 -> 512, 3x3) layer.  For suites, each layer's conv2d()/Conv2d time ratio is reported
and their geomean (issue 9's target: <= 1.15).
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import bench_layers, peers
else:
    from . import bench_layers, peers

REFERENCE_LAYERS = [
    {"name": "tiny", "input_shape": [1, 16, 8, 8], "out_channels": 16, "kernel_size": [3, 3],
     "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1, "count": 1},
    {"name": "mid", "input_shape": [1, 256, 14, 14], "out_channels": 256, "kernel_size": [3, 3],
     "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1, "count": 1},
    {"name": "deep", "input_shape": [1, 512, 7, 7], "out_channels": 512, "kernel_size": [3, 3],
     "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1, "count": 1},
]


def contenders(entry: dict, threads: int) -> dict:
    import im2row

    geo = peers.geometry(entry)
    rng = np.random.default_rng([7, *geo.name.encode()])
    x = rng.standard_normal(geo.input_shape, dtype=np.float32)
    w = rng.standard_normal(geo.weight_shape, dtype=np.float32) / np.float32(
        math.sqrt(geo.weight_shape[1] * geo.kernel[0] * geo.kernel[1]))
    b = rng.standard_normal(geo.out_channels, dtype=np.float32)
    padding = tuple(geo.pads)
    layer = im2row.Conv2d(w, b, geo.stride, padding, geo.dilation, geo.groups,
                          input_shape=x.shape, threads=threads)
    fns = {
        "Conv2d": lambda: layer(x),
        "conv2d()": lambda: im2row.conv2d(x, w, b, geo.stride, padding, geo.dilation,
                                          geo.groups, threads=threads),
    }
    if peers.torch_module() is not None:
        fns["torch"] = peers.make_torch(x, w, b, geo, channels_last=False)
    return fns


def time_layer(entry: dict, threads: int, repeats: int, min_time: float) -> dict:
    fns = contenders(entry, threads)
    for fn in fns.values():
        fn()
    iters = {name: bench_layers._inner_iterations(fn, min_time) for name, fn in fns.items()}
    gc.disable()
    try:
        samples = bench_layers._time_round_robin(fns, iters, repeats, layer_cap=5.0)
    finally:
        gc.enable()
    column = 1 if threads == 1 else 0          # process CPU time single-threaded, else wall
    return {name: 1e3 * min(s[column] for s in pairs) for name, pairs in samples.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", nargs="*", default=None,
                        help="suites (im2row/models names or JSON paths); default: the three "
                             "reference layers")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--min-time", type=float, default=0.02)
    parser.add_argument("--markdown", default=None, help="also write the tables here")
    args = parser.parse_args(argv)

    import im2row
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("IM2ROW_PLAN_CACHE", "off")
    entries = REFERENCE_LAYERS
    if args.suite:
        entries = [e for s in args.suite for e in bench_layers.load_suite(s)]
    torch = peers.torch_module()
    lines = [f"host: {bench_layers._cpu_model()}, ISA {im2row.get_isa()}, "
             f"{os.cpu_count()} cores"]
    for threads in args.threads:
        im2row.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            rows, ratios = [], []
            for entry in entries:
                t = time_layer(entry, threads, args.repeats, args.min_time)
                ratio = t["conv2d()"] / t["Conv2d"]
                ratios.append(ratio)
                rows.append((entry["name"], t, ratio))
                print(f"  {threads} thr {entry['name']:<18} Conv2d {t['Conv2d']:.4f} ms  "
                      f"conv2d() {t['conv2d()']:.4f} ms  torch {t.get('torch', float('nan')):.4f} ms"
                      f"  ratio {ratio:.3f}", flush=True)
        lines.append(f"\n{threads} thread(s):\n")
        lines.append("| layer | Conv2d call ms | conv2d() ms | torch F.conv2d ms | conv2d()/Conv2d | "
                     "conv2d()/torch |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for name, t, ratio in rows:
            tt = t.get("torch")
            torch_ms = "-" if tt is None else f"{tt:.4f}"
            vs_torch = "-" if tt is None else f"{t['conv2d()'] / tt:.3f}"
            lines.append(f"| {name} | {t['Conv2d']:.4f} | {t['conv2d()']:.4f} | {torch_ms} | "
                         f"{ratio:.3f} | {vs_torch} |")
        geo = math.exp(statistics.fmean(math.log(r) for r in ratios))
        lines.append(f"\ngeomean conv2d()/Conv2d over {len(ratios)} layers: {geo:.3f} "
                     f"(max {max(ratios):.3f})")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
