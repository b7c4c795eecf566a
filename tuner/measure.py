"""Timing and checking one shape's candidate plans.

A Bench holds one shape's operands (seeded random input, weights, bias) and the default plan's
output on them.  Every candidate runs through the public Conv2d with the plan forced, so what
is timed is exactly what a user's call costs; its first call is checked against the default
plan's output (max relative error <= MAX_REL_ERROR) before any timing counts.

Timing: a sample is the mean of `inner` back-to-back calls (inner chosen so that a sample lasts
at least min_time); samples are repeated and the minimum is kept (noise on a shared machine
only ever adds time).  clock='cpu' measures the calling thread's CPU time instead of wall time:
robust against other processes, valid with one thread only (then all the work runs on the
calling thread: BLAS is limited to one thread and the core runs serially); 'auto' (default)
is 'cpu' with one thread, else 'wall' (as benchmarks/bench_layers.py does).
"""
from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time

import numpy as np

from im2row import Conv2d, default_plan
from im2row.plan import useful_threads
from im2row.modelrun import example_operands
from im2row.plan import Plan
from im2row.spec import ConvSpec

MAX_REL_ERROR = 1e-4
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def resolve_clock(clock: str, threads: int) -> str:
    if clock == "auto":
        return "cpu" if int(threads) == 1 else "wall"
    return clock


class PlanMismatch(Exception):
    """A candidate plan's output differs from the default plan's."""


@contextlib.contextmanager
def _no_gc():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    """max |y - ref| / max |ref| (inf for NaN or a shape mismatch)."""
    if y.shape != ref.shape:
        return math.inf
    if ref.size == 0:
        return 0.0
    scale = float(np.max(np.abs(ref)))
    err = float(np.max(np.abs(y.astype(np.float64) - ref)))
    if not math.isfinite(err):
        return math.inf
    return err / scale if scale > 0 else err


class Bench:
    """One shape's operands, the default plan's output, and a calibrated sample length."""

    def __init__(self, spec: ConvSpec, *, threads: int = 1, seed: int = 0, clock: str = "auto",
                 min_time: float = 2e-3):
        clock = resolve_clock(clock, threads)
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
        if clock == "cpu" and threads != 1:
            raise ValueError("clock='cpu' measures the calling thread only: use it with threads=1")
        self.spec = spec
        self.threads = int(threads)
        self.clock_name = clock
        self.clock = CLOCKS[clock]
        self.min_time = float(min_time)
        self.x, self.w, self.b = example_operands(spec, np.random.default_rng(seed))
        self.out = np.empty(spec.output_shape, np.float32)
        # the default the runtime gives this shape: the plan for the threads its work can use
        self.default = default_plan(spec, useful_threads(spec, self.threads)).resolved()
        run = self.runner(self.default)
        run()
        self.reference = self.out.astype(np.float64)
        # Calibrate: inner calls per sample so that a sample lasts >= min_time.
        first = self._sample(run, 1)
        self.inner = max(1, int(math.ceil(self.min_time / max(first, 1e-7))))
        self.default_estimate = min(first, self._sample(run, self.inner))

    def runner(self, plan: Plan):
        """A zero-argument callable running this plan into self.out (weights packed now)."""
        layer = Conv2d.from_spec(self.spec, self.w, self.b, plan=plan, threads=self.threads)
        x, out = self.x, self.out

        def run():
            layer(x, out=out)
        run.plan = plan
        return run

    def check(self, run) -> float:
        """Run once (also the warm-up) and compare with the default plan's output."""
        self.out.fill(np.nan)
        run()
        err = relative_error(self.out, self.reference)
        if not err <= MAX_REL_ERROR:
            raise PlanMismatch(f"max relative error {err:.3g} > {MAX_REL_ERROR:g} against the "
                               f"default plan")
        return err

    def _sample(self, run, inner: int) -> float:
        clock = self.clock
        with _no_gc():
            start = clock()
            for _ in range(inner):
                run()
            return (clock() - start) / inner

    def sample(self, run) -> float:
        """Seconds per call, averaged over self.inner calls."""
        return self._sample(run, self.inner)

    def head_to_head(self, runs: dict, rounds: int) -> dict:
        """Interleaved rounds (order rotated each round) over {label: run}; returns
        {label: list of samples}."""
        labels = list(runs)
        samples = {label: [] for label in labels}
        for r in range(rounds):
            shift = r % len(labels)
            for label in labels[shift:] + labels[:shift]:
                samples[label].append(self.sample(runs[label]))
        return samples


def summarize(samples: list) -> tuple:
    """(min, median) of a sample list."""
    return min(samples), statistics.median(samples)
