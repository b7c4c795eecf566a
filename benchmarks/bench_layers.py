"""Side-by-side layer benchmark: im2row against numpy im2col + sgemm, PyTorch (NCHW and
channels_last) and ONNX Runtime, all in one process, at one thread count.

    python benchmarks/bench_layers.py --suite resnet50 vgg19 mobilenet_v2 --threads 1
    python benchmarks/bench_layers.py --suite all --json out.json --markdown out.md
    python benchmarks/bench_layers.py --suite path/to/layers.json --layers 'resnet50.1*'
    python benchmarks/bench_layers.py --suite resnet50 --compare-plans   # default plan vs library's pick

Suites are im2row/models/<name>.json (or any JSON list of entries with name, input_shape,
out_channels, kernel_size, stride, padding, dilation, groups, count).

Timing: every contender is prepared outside timing, warmed up, then the contenders are run
round-robin (rotating the order each round) so that drift on a noisy machine hits all of them
alike; each sample is the mean of enough inner calls to last >= --min-time; the minimum over
rounds is reported (the median is kept in the JSON).  A layer stops after --layer-cap seconds
once it has at least 3 rounds.

Importable:  from benchmarks.bench_layers import run_suite, load_suite, summarize
"""
from __future__ import annotations

import argparse
import datetime
import fnmatch
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    # Run as a script: make the repo root importable (benchmarks.peers, the in-place im2row).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import peers
else:
    from . import peers

IM2ROW = "im2row"
IM2ROW_DEFAULT = "im2row-default"   # --compare-plans: the heuristic default plan, forced
NUMPY = "numpy-im2col"
TORCH = "torch"
TORCH_CL = "torch-CL"
ORT = "ort"
ALL_CONTENDERS = (IM2ROW, IM2ROW_DEFAULT, NUMPY, TORCH, TORCH_CL, ORT)
FRAMEWORK_PEERS = (TORCH, TORCH_CL, ORT)
LABELS = {IM2ROW: "im2row", IM2ROW_DEFAULT: "i2r-dflt", NUMPY: "np-im2col", TORCH: "torch",
          TORCH_CL: "torch-CL", ORT: "ORT"}
# 'all' = the four distinct networks; vgg16 ships too but has exactly vgg19's layer shapes.
ALL_SUITES = ("resnet50", "vgg19", "mobilenet_v2", "shufflenet")
# 'public' = the ten suites of ../shared/layers; 'classes' = networks and shape classes
# beyond them (1-D, dilated, depthwise with multipliers, grouped, first layers, batch > 1).
PUBLIC_SUITES = ALL_SUITES + ("googlenet_v3", "yolov2", "ssd_mobilenet", "resnext_101",
                              "dilated", "deepbench_inference_device")
CLASS_SUITES = ("wavenet", "deeplab_v3", "efficientnet_b0", "convnext_tiny", "unet", "yolov3",
                "alexnet", "shape_classes")
SUITE_GROUPS = {"all": ALL_SUITES, "public": PUBLIC_SUITES, "classes": CLASS_SUITES}
ERROR_LIMIT = 1e-3
MIB = float(1 << 20)
MIN_ROUNDS = 3


# ---------------------------------------------------------------------------------------------
# suites


def models_dir() -> Path:
    """im2row/models without importing im2row (the compiled core may be mid-rebuild)."""
    spec = importlib.util.find_spec("im2row")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "models"
    return Path(__file__).resolve().parents[1] / "im2row" / "models"


def suite_names() -> list:
    return sorted(p.stem for p in models_dir().glob("*.json"))


def load_suite(name_or_path: str) -> list:
    """A shipped suite name or a path to a suite JSON -> list of layer entries (with 'suite')."""
    path = Path(name_or_path)
    if not (path.suffix == ".json" or path.exists()):
        path = models_dir() / f"{name_or_path}.json"
        if not path.exists():
            raise SystemExit(f"unknown suite {name_or_path!r}; shipped: {', '.join(suite_names())}"
                             f" (or give a path to a suite JSON)")
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    if isinstance(entries, dict):
        entries = entries.get("layers", [])
    suite = path.stem
    return [{**e, "suite": e.get("suite", suite)} for e in entries]


def select_layers(entries: list, patterns: list | None) -> list:
    if not patterns:
        return entries
    return [e for e in entries if any(fnmatch.fnmatchcase(e["name"], p) for p in patterns)]


# ---------------------------------------------------------------------------------------------
# contenders


def _im2row():
    import im2row
    return im2row


def available_contenders(compare_plans: bool = False) -> list:
    names = [IM2ROW] + ([IM2ROW_DEFAULT] if compare_plans else []) + [NUMPY]
    if peers.torch_module() is not None:
        names += [TORCH, TORCH_CL]
    if peers.ort_module() is not None:
        names.append(ORT)
    return names


def plan_str(plan) -> str:
    if plan is None:
        return "-"
    short = {"incremental": "incr", "classic": "classic", "pointwise": "1x1", "depthwise": "dw"}
    text = short.get(plan.algorithm, plan.algorithm)
    if getattr(plan, "layout", "NCHW") == "NHWC":
        return f"nhwc-{text}/{plan.isa}"   # our kernels only; gemm does not apply
    if plan.algorithm == "incremental":
        text += f" B{plan.column_block}"
    if plan.algorithm == "depthwise":
        # direct kernel (the gemm field does not apply): planar, or by channel blocks
        blocks = f" ch{plan.channel_block}" if plan.channel_block else ""
        return f"{text}{blocks}/{plan.isa}"
    text += f" {plan.gemm}"
    if plan.gemm == "packed":
        text += f"/{plan.isa}"
    return text


def _make_im2row(x, w, b, geo, threads, forced_default: bool, layout: str = "NCHW"):
    """layout='NHWC': im2row gets channels-last data (converted once, outside timing) and
    returns channels-last output, as a channels-last network would call it."""
    im2row = _im2row()
    padding = geo.padding_arg if not isinstance(geo.padding_arg, list) else tuple(geo.padding_arg)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    plan = None
    if forced_default:
        spec = im2row.make_spec(x.shape, w.shape, stride=geo.stride, padding=padding,
                                dilation=geo.dilation, groups=geo.groups, layout=layout)
        plan = im2row.default_plan(spec, threads)
    t0 = time.perf_counter()
    layer = im2row.Conv2d(w, b, geo.stride, padding, geo.dilation, geo.groups, layout=layout,
                          input_shape=x.shape, plan=plan, threads=threads)
    prepare_ms = 1e3 * (time.perf_counter() - t0)
    info = {"plan": layer.plan.to_dict() if layer.plan else None, "plan_str": plan_str(layer.plan),
            "workspace_bytes": layer.workspace_bytes,
            "packed_weight_bytes": layer.packed_weight_bytes, "prepare_ms": prepare_ms,
            "layout": layout,
            "predicted_ms": _predicted_ms(im2row, x.shape, w.shape, geo, padding, layer.plan,
                                          threads, layout)}
    return (lambda: layer(x)), info


def _predicted_ms(im2row, x_shape, w_shape, geo, padding, plan, threads, layout="NCHW"):
    """The cost model's time for the plan that runs (im2row.costmodel), or None (also for
    plans the model does not cover: channels-last depthwise)."""
    try:
        from im2row import costmodel
    except ImportError:
        return None
    if not getattr(costmodel, "covers", lambda p: p.layout == "NCHW")(plan):
        return None
    spec = im2row.make_spec(x_shape, w_shape, stride=geo.stride, padding=padding,
                            dilation=geo.dilation, groups=geo.groups, layout=layout)
    return 1e3 * costmodel.predict(spec, plan, threads)


def _make(name, x, w, b, geo, threads, layout="NCHW"):
    """-> (callable, extra info dict).  layout: the data layout im2row is called with."""
    if name == IM2ROW:
        return _make_im2row(x, w, b, geo, threads, forced_default=False, layout=layout)
    if name == IM2ROW_DEFAULT:
        return _make_im2row(x, w, b, geo, threads, forced_default=True, layout=layout)
    if name == NUMPY:
        return peers.make_numpy_im2col(x, w, b, geo), {}
    if name == TORCH:
        return peers.make_torch(x, w, b, geo, channels_last=False), {}
    if name == TORCH_CL:
        return peers.make_torch(x, w, b, geo, channels_last=True), {}
    if name == ORT:
        return peers.make_onnxruntime(x, w, b, geo, threads), {}
    raise ValueError(f"unknown contender {name!r}")


# ---------------------------------------------------------------------------------------------
# timing


def _inner_iterations(fn, min_time: float) -> int:
    """Calls per sample so that a sample lasts >= min_time (tiny layers need many)."""
    calls, elapsed = 0, 0.0
    # Grow the probe until it lasts a quarter of min_time, for a usable per-call estimate.
    batch = 1
    while elapsed < min_time / 4 and calls < 100_000:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        elapsed += time.perf_counter() - t0
        calls += batch
        batch *= 2
    per_call = elapsed / calls
    return max(1, min(100_000, math.ceil(min_time / per_call)))


def resolve_clock(clock: str, threads: int) -> str:
    if clock == "auto":
        return "cpu" if threads == 1 else "wall"
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'auto', 'wall' or 'cpu', got {clock!r}")
    if clock == "cpu" and threads != 1:
        raise ValueError("clock='cpu' needs threads=1: with more, CPU time sums over threads")
    return clock


def _time_round_robin(fns: dict, iters: dict, repeats: int, layer_cap: float) -> dict:
    """-> {name: [(wall s, process-CPU s) per call, one pair per round]}."""
    names = list(fns)
    samples = {n: [] for n in names}
    start = time.perf_counter()
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn, it = fns[name], iters[name]
            # Process CPU time counts every thread of ours (helper threads included, so no
            # contender can hide work there) and none of the other processes on the machine.
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(it):
                fn()
            t1, c1 = time.perf_counter(), time.process_time()
            samples[name].append(((t1 - t0) / it, (c1 - c0) / it))
        if r + 1 >= min(MIN_ROUNDS, repeats) and time.perf_counter() - start > layer_cap:
            break
    return samples


def _rel_error(y: np.ndarray, ref: np.ndarray) -> float:
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(y.astype(np.float64) - ref))) / scale


def run_layer(entry: dict, *, threads: int = 1, repeats: int = 7, min_time: float = 0.02,
              layer_cap: float = 3.0, contenders: list | None = None, seed: int = 0,
              clock: str = "wall", layout: str = "NCHW") -> dict:
    """Benchmark one suite entry.  Expects the thread limits to be set by the caller
    (run_suite does it).  clock: 'wall' (perf_counter) or 'cpu' (this process's CPU time:
    immune to other processes taking the cores; equals wall time single-threaded)."""
    geo = peers.geometry(entry)
    names = list(contenders or available_contenders())
    # Seeded per layer name, so a layer gets the same data whatever else runs.
    rng = np.random.default_rng([seed, *geo.name.encode()])
    x = rng.standard_normal(geo.input_shape, dtype=np.float32)
    fan_in = geo.weight_shape[1] * geo.kernel[0] * geo.kernel[1]
    w = (rng.standard_normal(geo.weight_shape, dtype=np.float32) / np.float32(math.sqrt(fan_in)))
    b = (0.1 * rng.standard_normal(geo.out_channels, dtype=np.float32)).astype(np.float32)

    result = {
        "suite": entry.get("suite", ""), "name": geo.name, "conv": geo.describe(),
        "count": geo.count, "input_shape": list(geo.input_shape),
        "weight_shape": list(geo.weight_shape), "output_shape": list(geo.output_shape),
        "stride": list(geo.stride), "pads": list(geo.pads), "dilation": list(geo.dilation),
        "groups": geo.groups, "flops": geo.flops,
        "input_bytes": geo.image_input_bytes(), "im2col_bytes": geo.im2col_bytes(),
        "threads": threads, "times": {}, "errors": {}, "failures": {}, "info": {},
    }

    fns, outputs = {}, {}
    for name in names:
        try:
            fn, info = _make(name, x, w, b, geo, threads, layout)
            out = peers.to_numpy(fn()).copy()  # warm-up call, also the accuracy sample
            if info.get("layout") == "NHWC":
                out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
            if out.shape != tuple(geo.output_shape):
                raise ValueError(f"output shape {out.shape}, expected {geo.output_shape}")
            fn()
        except Exception as exc:  # noqa: BLE001 - one broken contender must not stop the run
            result["failures"][name] = f"{type(exc).__name__}: {exc}"
            continue
        fns[name], outputs[name] = fn, out
        if info:
            result["info"][name] = info

    # Reference: torch NCHW (float32) if it ran, else the float64 numpy convolution.
    if TORCH in outputs:
        ref, result["error_ref"] = outputs[TORCH].astype(np.float64), "torch"
    else:
        ref, result["error_ref"] = peers.reference_float64(x, w, b, geo), "float64"
    for name, out in outputs.items():
        result["errors"][name] = _rel_error(out, ref)
    del outputs, ref

    iters = {name: _inner_iterations(fn, min_time) for name, fn in fns.items()}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one sample is noise, not convolution time
    try:
        samples = _time_round_robin(fns, iters, repeats, layer_cap)
    finally:
        if gc_was_enabled:
            gc.enable()
    for name, pairs in samples.items():
        wall = [1e3 * p[0] for p in pairs]
        cpu = [1e3 * p[1] for p in pairs]
        chosen = cpu if clock == "cpu" else wall
        result["times"][name] = {
            "min_ms": min(chosen), "median_ms": statistics.median(chosen),
            "wall_min_ms": min(wall), "wall_median_ms": statistics.median(wall),
            "cpu_min_ms": min(cpu), "iters": iters[name], "rounds": len(pairs),
            "wall_samples_ms": wall, "cpu_samples_ms": cpu}
    result["clock"] = clock
    _derive(result)
    return result


def _derive(r: dict) -> None:
    """Best peer, speed ratio, GF/s, workspace ratios."""
    times = r["times"]
    fw = [n for n in FRAMEWORK_PEERS if n in times]
    candidates = fw or ([NUMPY] if NUMPY in times else [])
    r["peer_set"] = "frameworks" if fw else ("numpy-im2col" if candidates else "none")
    best = min(candidates, key=lambda n: times[n]["min_ms"]) if candidates else None
    r["best_peer"] = best
    r["best_peer_ms"] = times[best]["min_ms"] if best else None
    im = times.get(IM2ROW, {}).get("min_ms")
    r["im2row_ms"] = im
    r["speedup"] = (r["best_peer_ms"] / im) if (im and best) else None
    r["gflops"] = {n: r["flops"] / (t["min_ms"] * 1e6) for n, t in times.items()}
    info = r["info"].get(IM2ROW, {})
    ws = info.get("workspace_bytes")
    r["workspace_bytes"] = ws
    r["workspace_ratio"] = (ws / r["input_bytes"]) if ws is not None else None
    if IM2ROW_DEFAULT in times and im:
        # > 1: the library's pick is faster than the forced heuristic default.
        r["pick_vs_default"] = times[IM2ROW_DEFAULT]["min_ms"] / im
    err = r["errors"].get(IM2ROW)
    r["im2row_error_ok"] = (err is not None and err <= ERROR_LIMIT)
    predicted = info.get("predicted_ms")
    r["predicted_ms"] = predicted
    # The cost model's error against the measured time of the same plan (> 0: too slow).
    r["model_error"] = (predicted - im) / im if (predicted and im) else None


def run_suite(layers, threads: int = 1, repeats: int = 7, min_time: float = 0.02,
              layer_cap: float = 3.0, compare_plans: bool = False, plans: str = "default",
              contenders: list | None = None, seed: int = 0, progress=None,
              clock: str = "auto", cache=None, layout: str = "NCHW") -> list:
    """Benchmark layers side by side; returns one dict per layer (see run_layer).

    layers: a suite name, a path to a suite JSON, or a list of suite entries (dicts).
    plans: 'default' (plan cache off: untuned default plans) or 'tuned' (the runtime's plan
    cache, file `cache` or the default one).  compare_plans adds an im2row run with the
    default plan forced.  progress: callable(str) for one line per layer, or None."""
    from threadpoolctl import threadpool_limits

    clock = resolve_clock(clock, threads)
    if isinstance(layers, (str, os.PathLike)):
        layers = load_suite(str(layers))
    names = list(contenders) if contenders else available_contenders(compare_plans)
    if compare_plans and IM2ROW_DEFAULT not in names:
        names.insert(1, IM2ROW_DEFAULT)
    _preload(names)
    torch = peers.torch_module() if (TORCH in names or TORCH_CL in names) else None
    saved_torch_threads = torch.get_num_threads() if torch is not None else None
    restore_im2row = _set_im2row_threads(threads)
    restore_plan_cache = _use_plan_cache(plans == "tuned", cache)
    results = []
    try:
        if torch is not None:
            torch.set_num_threads(threads)
        # Scoped: OpenBLAS (numpy's and scipy's) and OpenMP pools go back afterwards.
        with threadpool_limits(limits=threads):
            for entry in layers:
                t0 = time.perf_counter()
                r = run_layer(entry, threads=threads, repeats=repeats, min_time=min_time,
                              layer_cap=layer_cap, contenders=names, seed=seed, clock=clock,
                              layout=layout)
                r["plans_mode"] = plans
                r["layout"] = layout
                r["wall_s"] = time.perf_counter() - t0
                results.append(r)
                if progress is not None:
                    progress(_progress_line(r))
    finally:
        if torch is not None:
            torch.set_num_threads(saved_torch_threads)
        restore_im2row()
        restore_plan_cache()
    return results


def _set_im2row_threads(threads: int):
    """im2row's default thread count (all cores) -> threads for this run; returns the undo."""
    try:
        im2row = _im2row()
    except Exception:  # noqa: BLE001 - a broken import is reported per layer
        return lambda: None
    previous = importlib.import_module("im2row._threads")._num_threads  # None = not set
    im2row.set_num_threads(threads)
    return lambda: im2row.set_num_threads(previous)


def _preload(names: list) -> None:
    """Load every BLAS/OpenMP library before threadpool_limits: it only limits what is loaded."""
    import scipy.linalg.blas  # noqa: F401
    for loader in ([_im2row] if IM2ROW in names or IM2ROW_DEFAULT in names else []) + [
            peers.torch_module if TORCH in names or TORCH_CL in names else None,
            peers.ort_module if ORT in names else None]:
        if loader is not None:
            try:
                loader()
            except Exception:  # noqa: BLE001 - reported per layer as a failure
                pass


def _use_plan_cache(enabled: bool, path=None):
    """'tuned': the runtime's plan cache (the default file, or `path`); 'default': no cache,
    so every layer runs the heuristic default plan.  Returns the undo (run_suite is
    importable: the caller's setting comes back afterwards)."""
    from im2row import wisdom

    previous = os.environ.get(wisdom.ENV_VAR)
    if enabled:
        if path is not None:
            os.environ[wisdom.ENV_VAR] = str(path)
    else:
        os.environ[wisdom.ENV_VAR] = "off"
    wisdom.store().reset()

    def undo():
        if previous is None:
            os.environ.pop(wisdom.ENV_VAR, None)
        else:
            os.environ[wisdom.ENV_VAR] = previous
        wisdom.store().reset()
    return undo


def _progress_line(r: dict) -> str:
    parts = [f"{r['suite']}/{r['name']:<18} {r['conv']:<26}"]
    for name, t in r["times"].items():
        parts.append(f"{LABELS[name]}={t['min_ms']:.3f}")
    if r.get("speedup"):
        parts.append(f"x{r['speedup']:.2f}")
    for name, msg in r["failures"].items():
        parts.append(f"[{LABELS[name]} FAILED: {msg[:80]}]")
    parts.append(f"({r['wall_s']:.1f}s)")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# summary


def _geomean(values: list) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarize(results: list) -> list:
    """One dict per suite: geomean / count-weighted speed vs best peer, wins, totals."""
    suites = {}
    for r in results:
        suites.setdefault(r["suite"], []).append(r)
    out = []
    for suite, rs in suites.items():
        contenders = []
        for r in rs:
            contenders += [n for n in r["times"] if n not in contenders]
        totals = {}
        for name in contenders:
            # count-weighted: the convolution time of one forward pass of the network.
            if all(name in r["times"] for r in rs):
                totals[name] = sum(r["count"] * r["times"][name]["min_ms"] for r in rs)
            else:
                totals[name] = None
        scored = [r for r in rs if r.get("speedup")]
        best_total = sum(r["count"] * r["best_peer_ms"] for r in scored)
        im_total = sum(r["count"] * r["im2row_ms"] for r in scored)
        ratios = [r["workspace_ratio"] for r in rs
                  if r.get("workspace_ratio") is not None and max(r["weight_shape"][2:]) > 1]
        errs = [r["errors"].get(IM2ROW) for r in rs if r["errors"].get(IM2ROW) is not None]
        peer_sets = {r["peer_set"] for r in rs}
        summary = {
            "suite": suite, "layers": len(rs), "scored": len(scored),
            "wins": sum(1 for r in scored if r["speedup"] > 1.0),
            "geomean_speedup": _geomean([r["speedup"] for r in scored]),
            "weighted_speedup": (best_total / im_total) if im_total else None,
            "total_ms": totals, "best_peer_total_ms": best_total if scored else None,
            "max_workspace_ratio_k_gt_1": max(ratios) if ratios else None,
            "max_im2row_error": max(errs) if errs else None,
            "bad_layers": [r["name"] for r in rs
                           if r["errors"].get(IM2ROW) is not None and not r["im2row_error_ok"]],
            "failed_layers": [r["name"] for r in rs if IM2ROW in r["failures"]],
            "peer_set": "/".join(sorted(peer_sets)),
        }
        model = [abs(r["model_error"]) for r in rs if r.get("model_error") is not None]
        summary["model_median_abs_error"] = statistics.median(model) if model else None
        summary["min_speedup"] = min((r["speedup"] for r in scored), default=None)
        picks = [r["pick_vs_default"] for r in rs if r.get("pick_vs_default")]
        if picks:
            summary["geomean_pick_vs_default"] = _geomean(picks)
        out.append(summary)
    return out


# ---------------------------------------------------------------------------------------------
# machine info


def machine_info(threads: int) -> dict:
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": platform.node(), "platform": platform.platform(),
            "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "numpy": np.__version__,
            "loadavg": _loadavg()}
    try:
        import scipy
        info["scipy"] = scipy.__version__
    except Exception:  # noqa: BLE001
        pass
    try:
        im2row = _im2row()
        info["im2row"] = im2row.__version__
        info["isa"] = im2row.get_isa()
        info["available_isas"] = im2row.available_isas()
    except Exception as exc:  # noqa: BLE001
        info["im2row"] = f"import failed: {type(exc).__name__}: {exc}"
    torch = peers.torch_module()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
    ort = peers.ort_module()
    if ort is not None:
        info["onnxruntime"] = ort.__version__
    try:
        import scipy.linalg  # noqa: F401 - loads scipy's OpenBLAS so threadpoolctl sees it
        from threadpoolctl import threadpool_info
        info["blas"] = [
            {k: lib.get(k) for k in ("internal_api", "version", "architecture", "threading_layer",
                                     "num_threads")}
            | {"library": os.path.basename(lib.get("filepath", ""))}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
    except Exception:  # noqa: BLE001
        info["blas"] = []
    return info


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _cpu_model() -> str:
    """im2row's own reading (the name its plan cache keys on)."""
    try:
        from im2row.hwinfo import cpu_model
    except Exception:  # noqa: BLE001 - no importable im2row: the machine block still prints
        return platform.processor() or platform.machine()
    return cpu_model()


def format_machine(info: dict) -> str:
    lines = [f"date      {info['date']}   host {info['host']}",
             f"cpu       {info['cpu']} ({info['cpu_count']} logical cores); threads used: "
             f"{info['threads']}; load average {info.get('loadavg')}",
             f"im2row    {info.get('im2row')}  isa={info.get('isa')}  "
             f"available={info.get('available_isas')}"]
    for lib in info.get("blas", []):
        lines.append(f"blas      {lib['library']}: {lib['internal_api']} {lib['version']} "
                     f"({lib['architecture']}, {lib['threading_layer']})")
    versions = "  ".join(f"{k} {info[k]}" for k in ("python", "numpy", "scipy", "torch",
                                                    "onnxruntime") if k in info)
    lines.append(f"versions  {versions}")
    if info.get("peer_isa_switches"):
        held = " ".join(f"{k}={v}" for k, v in info["peer_isa_switches"].items())
        lines.append(f"peers     held to the forced ISA: {held} (ONNX Runtime has no switch)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# tables


def _f(value, fmt: str, none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def _render(headers: list, rows: list, right: set, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def layer_tables(results: list, markdown: bool = False) -> str:
    """Two tables: times/speed, then memory/accuracy/plan."""
    contenders = []
    for r in results:
        contenders += [n for n in ALL_CONTENDERS if n in r["times"] and n not in contenders]
    numpy_only = any(r["peer_set"] == "numpy-im2col" for r in results)

    head = ["layer", "conv", "n", "MFLOP"] + [f"{LABELS[c]} ms" for c in contenders] + [
        "pred ms", "im2row GF/s", "best peer", "peer GF/s", "vs best"]
    rows = []
    for r in results:
        row = [r["name"], r["conv"], str(r["count"]), f"{r['flops'] / 1e6:.0f}"]
        for c in contenders:
            row.append(_f(r["times"].get(c, {}).get("min_ms"), ".3f",
                          "FAIL" if c in r["failures"] else "-"))
        best = r["best_peer"]
        row += [_f(r.get("predicted_ms"), ".3f"), _f(r["gflops"].get(IM2ROW), ".1f"),
                LABELS.get(best, "-") if best else "-",
                _f(r["gflops"].get(best) if best else None, ".1f"),
                _f(r["speedup"], ".2f") + ("x" if r["speedup"] else "")]
        rows.append(row)
    t1 = _render(head, rows, set(range(2, len(head))) - {len(head) - 3}, markdown)

    head2 = ["layer", "conv", "plan", "ws MB", "input MB", "ws/input", "im2col MB", "packed MB",
             f"err vs {'torch' if not numpy_only else 'ref'}"]
    if any("pick_vs_default" in r for r in results):
        head2.append("pick/default")
    rows2 = []
    for r in results:
        info = r["info"].get(IM2ROW, {})
        err = r["errors"].get(IM2ROW)
        flag = "" if err is None or err <= ERROR_LIMIT else " !!"
        row = [r["name"], r["conv"], info.get("plan_str", "FAIL" if IM2ROW in r["failures"] else "-"),
               _f(_mb(r["workspace_bytes"]), ".2f"), f"{r['input_bytes'] / MIB:.2f}",
               _f(r["workspace_ratio"], ".2f"), f"{r['im2col_bytes'] / MIB:.2f}",
               _f(_mb(info.get("packed_weight_bytes")), ".2f"), _f(err, ".1e") + flag]
        if "pick/default" in head2:
            row.append(_f(r.get("pick_vs_default"), ".2f"))
        rows2.append(row)
    t2 = _render(head2, rows2, set(range(3, len(head2))), markdown)
    return t1 + "\n\n" + t2


def _mb(value):
    return None if value is None else value / MIB


def summary_table(summaries: list, markdown: bool = False) -> str:
    contenders = []
    for s in summaries:
        contenders += [n for n in ALL_CONTENDERS if n in s["total_ms"] and n not in contenders]
    head = (["suite", "layers", "im2row wins", "geomean vs best", "min vs best",
             "weighted vs best"]
            + [f"{LABELS[c]} total ms" for c in contenders]
            + ["best-peer total ms", "max ws/input (k>1)", "max err", "model err"])
    if any("geomean_pick_vs_default" in s for s in summaries):
        head.append("pick/default")
    rows = []
    for s in summaries:
        row = [s["suite"], str(s["layers"]), f"{s['wins']}/{s['scored']}",
               _f(s["geomean_speedup"], ".2f") + ("x" if s["geomean_speedup"] else ""),
               _f(s.get("min_speedup"), ".2f"),
               _f(s["weighted_speedup"], ".2f") + ("x" if s["weighted_speedup"] else "")]
        row += [_f(s["total_ms"].get(c), ".2f") for c in contenders]
        row += [_f(s["best_peer_total_ms"], ".2f"), _f(s["max_workspace_ratio_k_gt_1"], ".2f"),
                _f(s["max_im2row_error"], ".1e"), _f(s.get("model_median_abs_error"), ".0%")]
        if "pick/default" in head:
            row.append(_f(s.get("geomean_pick_vs_default"), ".2f"))
        rows.append(row)
    return _render(head, rows, set(range(1, len(head))), markdown)


def notes(results: list, settings: dict) -> str:
    numpy_peer = any(r["peer_set"] == "numpy-im2col" for r in results)
    clock = ("process CPU time" if settings.get("clock") == "cpu" else "wall time")
    peer = ("the numpy im2col + sgemm baseline (torch and onnxruntime not installed or not selected); err vs the "
            "float64 numpy convolution" if numpy_peer else
            "the fastest of torch NCHW, torch channels_last, ONNX Runtime; err vs torch NCHW")
    return (f"ms: minimum {clock} per call over interleaved rounds, batch as in the suite, "
            f"{settings['threads']} thread(s) for every contender.  vs best: best peer time / "
            f"im2row time (> 1 = im2row faster); best peer = {peer}.  geomean: over unique "
            f"layers; weighted: suite totals with each layer's time x count.  total ms: sum of "
            f"time x count.  ws: im2row workspace per image (beyond input, weights, packed "
            f"weights, output); im2col MB: the classic patch matrix (kh*kw*C x OH*OW) for "
            f"contrast.  MB = 2^20 bytes.  err = max|y - ref| / max|ref|.")


def report(info: dict, results: list, summaries: list, settings: dict, markdown: bool,
           header: bool = True) -> str:
    parts = []
    if header and not markdown:
        parts += [format_machine(info), _settings_line(settings), ""]
    for suite in dict.fromkeys(r["suite"] for r in results):
        rs = [r for r in results if r["suite"] == suite]
        title = f"{suite} ({len(rs)} unique layers)"
        if all(r["peer_set"] == "numpy-im2col" for r in rs):
            title += "  -- no torch/onnxruntime: the peer is the numpy im2col baseline"
        parts += [f"### {title}" if markdown else f"== {title}", "",
                  layer_tables(rs, markdown), ""]
    parts += ["### Summary" if markdown else "== Summary", "", summary_table(summaries, markdown),
              "", notes(results, settings)]
    warnings = _warnings(results)
    if warnings:
        parts += ["", *warnings]
    return "\n".join(parts) + "\n"


def _settings_line(s: dict) -> str:
    return (f"settings  threads={s['threads']} repeats={s['repeats']} min_time={s['min_time']}s "
            f"layer_cap={s['layer_cap']}s plans={s['plans']} compare_plans={s['compare_plans']} "
            f"clock={s.get('clock', 'wall')} seed={s['seed']} layout={s.get('layout', 'NCHW')}")


def _warnings(results: list) -> list:
    out = []
    for r in results:
        err = r["errors"].get(IM2ROW)
        if err is not None and err > ERROR_LIMIT:
            out.append(f"WARNING: im2row is WRONG on {r['suite']}/{r['name']} ({r['conv']}): "
                       f"relative error {err:.2e} > {ERROR_LIMIT:g} vs {r['error_ref']}")
        for name, other in r["errors"].items():
            if name != IM2ROW and other > ERROR_LIMIT:
                out.append(f"WARNING: {LABELS[name]} disagrees with {r['error_ref']} on "
                           f"{r['name']}: {other:.2e}")
        for name, msg in r["failures"].items():
            out.append(f"WARNING: {LABELS[name]} failed on {r['suite']}/{r['name']}: {msg}")
    return out


# ---------------------------------------------------------------------------------------------
# CLI


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", nargs="+", default=["resnet50"],
                   help=f"suite names ({', '.join(suite_names())}), 'all' "
                        f"(= {' '.join(ALL_SUITES)}), 'public' (the ten of ../shared/layers), "
                        f"'classes' (= {' '.join(CLASS_SUITES)}), or paths to suite JSON files")
    p.add_argument("--layers", default=None,
                   help="comma-separated layer names or glob patterns to keep (e.g. resnet50.1*)")
    p.add_argument("--threads", type=int, default=1, help="threads for every contender (default 1)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds per layer (default 7)")
    p.add_argument("--min-time", type=float, default=0.02,
                   help="minimum seconds per timing sample; tiny layers loop (default 0.02)")
    p.add_argument("--layer-cap", type=float, default=3.0,
                   help="seconds of timing per layer before stopping early, after >= 3 rounds "
                        "(default 3)")
    p.add_argument("--plans", choices=("default", "tuned"), default="default",
                   help="'default' (default): plan cache off, untuned default plans; 'tuned': "
                        "plans from the plan cache (--cache or the runtime's default file)")
    p.add_argument("--cache", default=None, help="plan cache file for --plans tuned")
    p.add_argument("--compare-plans", action="store_true",
                   help="also run im2row with im2row.default_plan(spec) forced, side by side")
    p.add_argument("--contenders", default=None,
                   help=f"comma-separated subset of {','.join(ALL_CONTENDERS)}")
    p.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto",
                   help="'cpu': this process's CPU time (with one thread = wall time on an idle "
                        "machine, but other processes' load does not count); 'wall': elapsed; "
                        "'auto' (default): cpu with --threads 1, else wall")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW",
                   help="data layout im2row is called with (NHWC: channels-last in and out, "
                        "converted outside timing); the peers keep their own")
    p.add_argument("--json", default=None, help="write raw numbers to this JSON file")
    p.add_argument("--markdown", default=None, help="write the tables as Markdown to this file")
    p.add_argument("--quiet", action="store_true", help="no per-layer progress lines")
    args = p.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.min_time <= 0:
        p.error("--threads and --repeats must be >= 1, --min-time > 0")
    if args.clock == "cpu" and args.threads != 1:
        p.error("--clock cpu needs --threads 1 (with more, CPU time sums over threads)")
    args.clock = resolve_clock(args.clock, args.threads)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # IM2ROW_ISA=avx2 on an AVX-512 host: the peers run at AVX2 too (before any of them loads)
    peer_switches = peers.hold_peers_to_isa(os.environ.get("IM2ROW_ISA"))
    suites = []
    for s in args.suite:
        suites += list(SUITE_GROUPS.get(s, [s]))
    patterns = [p.strip() for p in args.layers.split(",")] if args.layers else None
    entries = []
    for s in dict.fromkeys(suites):
        entries += select_layers(load_suite(s), patterns)
    if not entries:
        raise SystemExit("no layers selected")
    contenders = None
    if args.contenders:
        # names match whatever their case ('ORT', 'torch-cl')
        by_lower = {name.lower(): name for name in ALL_CONTENDERS}
        contenders = [by_lower.get(c.strip().lower(), c.strip())
                      for c in args.contenders.split(",")]
        unknown = set(contenders) - set(ALL_CONTENDERS)
        if unknown:
            raise SystemExit(f"unknown contenders {sorted(unknown)}; known: {ALL_CONTENDERS}")
        if IM2ROW not in contenders:
            contenders.insert(0, IM2ROW)

    info = machine_info(args.threads)
    info["peer_isa_switches"] = peer_switches
    settings = {"threads": args.threads, "repeats": args.repeats, "min_time": args.min_time,
                "layer_cap": args.layer_cap, "plans": args.plans,
                "compare_plans": args.compare_plans, "seed": args.seed, "clock": args.clock,
                "layout": args.layout}
    print(format_machine(info), flush=True)
    print(_settings_line(settings), flush=True)
    if not str(info.get("im2row", "")).startswith(("0", "1", "2", "3")):
        print(f"WARNING: {info.get('im2row')}", file=sys.stderr)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    results = run_suite(entries, threads=args.threads, repeats=args.repeats,
                        min_time=args.min_time, layer_cap=args.layer_cap,
                        compare_plans=args.compare_plans, plans=args.plans, cache=args.cache,
                        contenders=contenders, seed=args.seed, progress=progress,
                        clock=args.clock, layout=args.layout)
    summaries = summarize(results)
    settings["wall_s"] = time.perf_counter() - t0
    print()
    print(report(info, results, summaries, settings, markdown=False, header=False), end="")
    settings["loadavg_end"] = _loadavg()
    print(f"\n(total wall time {settings['wall_s']:.0f} s; load average at the end "
          f"{settings['loadavg_end']})")
    busy = max((info.get("loadavg") or [0])[0], (settings["loadavg_end"] or [0])[0])
    if args.clock == "wall" and busy > 0.5 * (os.cpu_count() or 1):
        print("note: the machine was busy; wall times include other processes' load "
              "(--clock cpu with --threads 1 excludes it)")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(_markdown_header(info, settings))
            f.write(report(info, results, summaries, settings, markdown=True))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "settings": settings, "summary": summaries,
                       "layers": results}, f, indent=1)
    bad = [r for r in results if r["errors"].get(IM2ROW, 0) > ERROR_LIMIT]
    return 1 if bad else 0


def _markdown_header(info: dict, settings: dict) -> str:
    blas = "; ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, {b['library']})"
                     for b in info.get("blas", []))
    return (f"Measured {info['date']} on {info['cpu']} ({info['cpu_count']} logical cores), "
            f"{settings['threads']} thread(s); im2row {info.get('im2row')} isa "
            f"{info.get('isa')} (available {info.get('available_isas')}); BLAS {blas}; "
            f"numpy {info.get('numpy')}, scipy {info.get('scipy')}, torch {info.get('torch', '-')}, "
            f"onnxruntime {info.get('onnxruntime', '-')}.\n\n")


if __name__ == "__main__":
    sys.exit(main())
