"""`python -m im2row tune ...` (im2row/__main__.py hands the arguments here)."""
from __future__ import annotations

import argparse
import json

from im2row._cli import Parser, UsageError, positive_int, read_model, seconds

from .search import DEFAULT_REPEATS, DEFAULT_TIMEOUT, DEFAULT_TRIALS


def _shape(text: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,C,H,W; got {text!r}") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected 4 dims N,C,H,W; got {text!r}")
    return values


def build_parser(prog: str = "python -m im2row tune") -> argparse.ArgumentParser:
    from im2row.layers import builtin_models

    p = Parser(
        prog=prog, description="Tune the convolution plans of a model on this machine and store "
                               "them in the plan cache (Conv2d/conv2d then use them).")
    p.add_argument("model", help=f"built-in model ({', '.join(builtin_models())}), a layer-suite "
                                 f".json file or an .onnx model")
    p.add_argument("--trials", type=positive_int, default=DEFAULT_TRIALS,
                   help=f"distinct plans measured per shape at most (default {DEFAULT_TRIALS})")
    p.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT,
                   help=f"seconds per distinct shape, 0 = no limit (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="thread count to tune for (default: im2row's default thread count)")
    p.add_argument("--cache", default=None,
                   help="plan cache file to write (default: $IM2ROW_PLAN_CACHE or "
                        "~/.cache/im2row/plans.json)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL shared by several tuning hosts (e.g. "
                        "sqlite:///tune.db or a MySQL/PostgreSQL URL)")
    p.add_argument("--input-shape", type=_shape, default=None,
                   help="N,C,H,W of an ONNX model's input when it has symbolic dims")
    p.add_argument("--repeats", type=positive_int, default=DEFAULT_REPEATS,
                   help=f"timing samples per candidate (default {DEFAULT_REPEATS})")
    p.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto",
                   help="'cpu': the calling thread's CPU time (robust on a loaded machine; "
                        "--threads 1 only); 'auto' (default): cpu with 1 thread, else wall")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retune", action="store_true",
                   help="measure shapes again even when the cache has plans for them")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .search import tune

    layers = read_model(args.model, args.input_shape)
    report = tune(layers, n_trials=args.trials,
                  timeout=None if args.timeout <= 0 else args.timeout, threads=args.threads,
                  cache=args.cache, storage=args.storage, progress=not args.no_progress,
                  input_shape=args.input_shape, seed=args.seed, retune=args.retune,
                  repeats=args.repeats, clock=args.clock)
    print(report)
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report.to_dict(), f, indent=1)
        except OSError as exc:
            raise UsageError(f"--json {args.json}: {exc.strerror or exc}") from None
    return 1 if any(r.status == "failed" for r in report.layers) else 0
