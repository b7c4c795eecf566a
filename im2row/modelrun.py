"""`python -m im2row run <model>`: run every convolution shape of a model with the plans the
runtime picks (tuned from the plan cache, else the default), check each result against an
independent path (classic im2row + SciPy's BLAS sgemm) and time it.  Never imports optuna."""
from __future__ import annotations

import math
import time

import numpy as np

from . import _threads, wisdom
from ._cli import Parser, positive_int, read_model
from ._api import Conv2d
from .layers import builtin_models, collect_layers, unique_specs
from .plan import Plan, choose_plan

# float32 results of two GEMM orders differ by a few ulps times sqrt(fan-in); 1e-4 relative to
# the output's magnitude is far above that and far below any indexing mistake.
TOLERANCE = 1e-4


def example_operands(spec, rng):
    """Random input, weights scaled by 1/sqrt(fan-in) (outputs of order 1) and bias."""
    fan_in = max(1, spec.group_in_channels * spec.kernel_h * spec.kernel_w)
    x = rng.uniform(-1, 1, spec.input_shape).astype(np.float32)
    w = (rng.uniform(-1, 1, spec.weight_shape) / math.sqrt(fan_in)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, spec.out_channels).astype(np.float32)
    return x, w, b


def _best_ms(fn, repeats: int, min_seconds: float = 0.05) -> float:
    """Fastest of `repeats` samples, each averaging enough calls to last min_seconds."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    inner = max(1, int(min_seconds / once))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best * 1e3


def _plan_text(plan: Plan) -> str:
    text = plan.algorithm
    if plan.algorithm == "incremental":
        text += f" cb={plan.column_block}" + (f" rb={plan.row_block}" if plan.row_block else "")
        text += f" ch={plan.channel_block}" if plan.channel_block else ""
    if plan.algorithm != "depthwise":
        text += f" {plan.gemm}"
    return text + (f" {plan.parallel}" if plan.parallel != "split" else "")


def run_model(model, *, threads=None, batch=None, repeats=5, cache=None, seed=0, out=print):
    """Run each distinct shape of `model` (anything tune() accepts); returns a list of dicts
    (name, plan, source, ms, gflops, workspace/input, error) and prints a table."""
    if cache is not None:
        wisdom.load_plans(cache)
    threads = _threads.check_threads(threads) if threads is not None else _threads.get_num_threads()
    rng = np.random.default_rng(seed)
    rows = []
    header = (f"{'layer':<22} {'input':>18} {'k':>5} {'s':>3} {'plan':<34} {'from':<7} "
              f"{'ms':>8} {'GF/s':>7} {'ws/in':>6} {'err':>8}")
    out(header)
    out("-" * len(header))
    for shape in unique_specs(collect_layers(model)):
        spec = shape.spec if batch is None else shape.spec.with_batch(batch)
        x, w, b = example_operands(spec, rng)
        plan = choose_plan(spec, threads).resolved()
        source = "tuned" if wisdom.store().lookup(spec, threads) is not None else "default"
        layer = Conv2d.from_spec(spec, w, b, plan=plan, threads=threads)
        y = layer(x)
        check = Conv2d.from_spec(spec, w, b, plan=Plan("classic", gemm="sgemm"),
                                 threads=threads)(x)
        scale = max(float(np.abs(check).max()), 1e-30)
        error = float(np.abs(y.astype(np.float64) - check).max()) / scale
        ms = _best_ms(lambda: layer(x), repeats)
        flops = 2.0 * math.prod(spec.output_shape) * spec.group_in_channels * spec.kernel_h \
            * spec.kernel_w
        ratio = layer.workspace_bytes / max(4 * math.prod(spec.input_shape), 1)
        row = {"name": shape.name, "count": shape.count, "input_shape": list(spec.input_shape),
               "plan": plan.to_dict(), "source": source, "ms": ms, "gflops": flops / ms / 1e6,
               "workspace_over_input": ratio, "error": error}
        rows.append(row)
        kernel = f"{spec.kernel_h}x{spec.kernel_w}"
        out(f"{shape.name[:22]:<22} {'x'.join(map(str, spec.input_shape)):>18} {kernel:>5} "
            f"{spec.stride_h:>3} {_plan_text(plan)[:34]:<34} {source:<7} {ms:8.3f} "
            f"{row['gflops']:7.1f} {ratio:6.2f} {error:8.1e}")
    total = sum(r["ms"] * r["count"] for r in rows)
    tuned = sum(r["source"] == "tuned" for r in rows)
    worst = max((r["error"] for r in rows), default=0.0)
    out(f"{len(rows)} distinct shapes ({tuned} tuned), {threads} thread(s): {total:.1f} ms for "
        f"the model's convolutions (each shape x its count); max error {worst:.1e} "
        f"({'ok' if worst <= TOLERANCE else 'FAILED'}, tolerance {TOLERANCE:g})")
    return rows


def main(argv=None) -> int:
    p = Parser(
        prog="python -m im2row run",
        description="Run a model's convolution shapes with the tuned (or default) plans, check "
                    "each against classic im2row + BLAS sgemm, and time them.")
    p.add_argument("model", help=f"built-in model ({', '.join(builtin_models())}), a layer-suite "
                                 f".json file or an .onnx model")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads per call (default: im2row's default)")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="batch size (default: the model's)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timing samples per shape")
    p.add_argument("--cache", default=None, help="plan cache file to load (default: the "
                                                 "user's cache, as at run time)")
    args = p.parse_args(argv)
    rows = run_model(read_model(args.model), threads=args.threads, batch=args.batch, repeats=args.repeats,
                     cache=args.cache)
    return 0 if all(r["error"] <= TOLERANCE for r in rows) else 1
