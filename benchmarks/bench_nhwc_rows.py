"""NHWC 'indirect' (one pointer per tap) against 'rowwise' (one pointer per kernel row) on
every k > 1, groups 1 layer of the suites: same data, 1 thread, interleaved calls, the best
of each in process CPU time.

    python benchmarks/bench_nhwc_rows.py [suite ...]   (default: resnet50 vgg19 mobilenet_v2)
"""
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import bench_layers, peers
else:
    from . import bench_layers, peers

import im2row

ALGORITHMS = ("indirect", "rowwise")


def compare(entry, rounds: int = 30, budget_s: float = 1.0):
    geo = peers.geometry(entry)
    rng = np.random.default_rng(0)
    x = np.ascontiguousarray(rng.standard_normal(geo.input_shape, dtype=np.float32)
                             .transpose(0, 2, 3, 1))
    w = rng.standard_normal(geo.weight_shape, dtype=np.float32)
    padding = geo.padding_arg if not isinstance(geo.padding_arg, list) else tuple(geo.padding_arg)
    layers = {a: im2row.Conv2d(w, None, geo.stride, padding, geo.dilation, 1, layout="NHWC",
                               threads=1, plan=im2row.Plan(a, layout="NHWC"))
              for a in ALGORITHMS}
    best = dict.fromkeys(ALGORITHMS, float("inf"))
    start = time.perf_counter()
    for _ in range(rounds):
        for name, layer in layers.items():
            t0 = time.process_time()
            layer(x)
            best[name] = min(best[name], time.process_time() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return geo, best


def main(argv=None) -> int:
    suites = (argv if argv is not None else sys.argv[1:]) or ["resnet50", "vgg19", "mobilenet_v2"]
    for suite in suites:
        for entry in bench_layers.load_suite(suite):
            geo = peers.geometry(entry)
            if geo.kernel == (1, 1) or geo.groups != 1:
                continue
            geo, best = compare(entry)
            print(f"{geo.name:16s} {geo.describe():28s} indirect {1e3 * best['indirect']:8.3f} ms"
                  f"  rowwise {1e3 * best['rowwise']:8.3f} ms"
                  f"  indirect/rowwise {best['indirect'] / best['rowwise']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
