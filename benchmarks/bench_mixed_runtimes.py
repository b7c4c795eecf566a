"""im2row calls in a process that also runs torch, alternating, against im2row alone: shows
whether another runtime's thread pool (torch's own OpenMP, spinning after each call) slows
im2row's parallel regions down.

    python benchmarks/bench_mixed_runtimes.py --layer 96,14,576,1 --threads 2

--layer C,H,OC,k: a k x k 'same' convolution of a 1 x C x H x H input to OC channels.
Prints the median, 90th percentile and maximum im2row call time in both settings.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", default="96,14,576,1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args(argv)

    import im2row
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    im2row.set_num_threads(args.threads)
    channels, size, out_channels, k = (int(v) for v in args.layer.split(","))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, channels, size, size), dtype=np.float32)
    w = rng.standard_normal((out_channels, channels, k, k), dtype=np.float32)
    layer = im2row.Conv2d(w, padding=k // 2, input_shape=x.shape)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    for mode in ("alone", "after-torch"):
        times = []
        for _ in range(args.calls):
            if mode == "after-torch":
                with torch.no_grad():
                    F.conv2d(xt, wt, None, 1, k // 2)
            start = time.perf_counter()
            layer(x)
            times.append(1e3 * (time.perf_counter() - start))
        times = np.array(times)
        print(f"{mode:<12} median {np.median(times):.4f}  p90 {np.percentile(times, 90):.4f}  "
              f"max {times.max():.4f} ms  (im2row ran on {layer._last.core_threads} thread(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
