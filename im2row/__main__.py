"""Command line:

    python -m im2row info                                   # CPU, ISA, BLAS, threads, plan cache
    python -m im2row tune resnet50 [--trials N] [--timeout S] [--threads T] [--cache FILE]
    python -m im2row tune model.onnx | layers.json ...
    python -m im2row run resnet50 [--threads T] [--batch N]  # run + check + time with the plans
    python -m im2row bench [bench_layers.py options]        # source checkouts: the benchmark

`info`, `run` and `bench` never import optuna; `tune` needs it (pip install 'im2row[tune]').
"""
from __future__ import annotations

import sys
from pathlib import Path

USAGE = """usage: python -m im2row {info,tune,run,bench} ...

  info    detected CPU features, kernel ISA in use, BLAS and its threads, plan cache
  tune    tune a model's convolution plans: python -m im2row tune resnet50 --trials 40
  run     run a model's convolutions with the tuned plans, checked and timed
  bench   side-by-side layer benchmark (benchmarks/bench_layers.py of a source checkout)

'python -m im2row <command> --help' for a command's options."""


def info(argv=None) -> int:
    import im2row
    from im2row import hwinfo, wisdom
    from im2row._cli import Parser

    p = Parser(prog="python -m im2row info",
                                description="What im2row detected on this machine.")
    p.add_argument("--cache", default=None, help="plan cache file to describe")
    args = p.parse_args(argv)
    features = hwinfo.cpu_features()
    blas = wisdom.blas_info()
    threads = im2row.get_num_threads()
    summary = wisdom.cache_summary(args.cache)
    identity = wisdom.machine_identity()
    lines = [
        f"im2row        {im2row.__version__} (core build {identity['build']})",
        f"CPU           {hwinfo.cpu_model()} ({identity['arch']}; {_cpu_id_text(identity)})",
        "caches        " + ", ".join(f"{k} {_bytes_text(v)}" for k, v in identity["caches"].items()),
        "CPU features  " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in features.items()),
        f"kernel ISAs   {', '.join(hwinfo.available_isas())} (in use: {hwinfo.get_isa()})",
        f"BLAS          {blas['name']} {blas['version'] or ''} ({blas['architecture'] or '?'}, "
        f"{blas['threading'] or '?'}), {blas['num_threads']} thread(s)",
        f"              {blas['filepath'] or ''}",
        f"threads       {threads} (im2row default per call)",
        f"machine id    {wisdom.machine_id()}",
    ]
    if summary["path"] is None:
        lines.append(f"plan cache    {summary['problem']}")
    else:
        state = "missing" if not summary["exists"] else (summary["problem"] or "ok")
        lines.append(f"plan cache    {summary['path']} ({state})")
        if summary["exists"] and not summary["problem"]:
            lines.append(f"              {summary['plans_here']} plan(s) for this machine, "
                         f"{summary['plans']} in all, {summary['machines']} machine(s)")
    print("\n".join(lines))
    return 0


def _cpu_id_text(identity: dict) -> str:
    cpu_id = identity.get("cpu_id") or {}
    cores = cpu_id.get("cores", [cpu_id])
    return " | ".join(" ".join(f"{k} {v}" for k, v in core.items()) for core in cores) or "?"


def _bytes_text(value: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} B"


def _find_benchmark() -> Path | None:
    """benchmarks/bench_layers.py of the source tree im2row was imported from, if any."""
    import im2row

    candidates = [Path(im2row.__file__).resolve().parent.parent, Path.cwd()]
    for root in candidates:
        script = root / "benchmarks" / "bench_layers.py"
        if script.is_file():
            return script
    return None


def bench(argv) -> int:
    script = _find_benchmark()
    if script is None:
        print("The layer benchmark is not part of the installed package.  From a source "
              "checkout of im2row run:\n    python benchmarks/bench_layers.py --suite resnet50 "
              "--threads 1\n(or 'python -m im2row bench ...' from the checkout's root).",
              file=sys.stderr)
        return 2
    import runpy

    saved = sys.argv
    sys.argv = [str(script)] + list(argv)
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


def _tune(argv) -> int:
    try:
        from im2row.tuner.cli import main as tune_main
    except ModuleNotFoundError as exc:
        if exc.name != "optuna" and "optuna" not in str(exc):
            raise
        print(f"python -m im2row tune: {exc}", file=sys.stderr)
        return 2
    return tune_main(argv)


def main(argv=None) -> int:
    from im2row._cli import UsageError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "info":
            return info(rest)
        if command == "tune":
            return _tune(rest)
        if command == "run":
            from im2row.modelrun import main as run_main
            return run_main(rest)
        if command == "bench":
            return bench(rest)
    except UsageError as exc:
        print(f"python -m im2row {command}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse: --help (0) or an argument error (2, one line)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    print(f"python -m im2row: error: unknown command {command!r} (commands: info, tune, run, "
          f"bench; --help for more)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
