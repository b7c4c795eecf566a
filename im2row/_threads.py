"""Thread count for conv2d and the BLAS pool kept coherent with it.

Our own threads (OpenMP in the core) and OpenBLAS's pool never run at once: while a call runs
its own threads, OpenBLAS is limited to one; when a plan hands the threads to sgemm instead,
the core runs serially.  The BLAS limit is scoped (threadpoolctl), reference-counted so
overlapping calls from several Python threads restore the user's setting only at the end."""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager

_lock = threading.Lock()
_num_threads: int | None = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _env_threads() -> int | None:
    value = os.environ.get("IM2ROW_NUM_THREADS", "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"IM2ROW_NUM_THREADS must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise ValueError(f"IM2ROW_NUM_THREADS must be a positive integer, got {value!r}")
    return threads


def get_num_threads() -> int:
    """Threads conv2d uses by default: set_num_threads(), else IM2ROW_NUM_THREADS, else the
    cores available to this process."""
    with _lock:
        if _num_threads is not None:
            return _num_threads
    return _env_threads() or available_cores()


def set_num_threads(threads: int | None) -> None:
    """Set the default thread count (None: back to IM2ROW_NUM_THREADS / available cores)."""
    global _num_threads
    if threads is not None:
        threads = check_threads(threads)
    with _lock:
        _num_threads = threads


def check_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return threads


class _BlasLimit:
    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._limiter = None
        self._blas = None

    def _controller(self):
        if self._blas is None:
            from threadpoolctl import ThreadpoolController
            self._blas = ThreadpoolController().select(internal_api="openblas")
        return self._blas

    @contextmanager
    def limited(self, threads: int):
        with self._lock:
            if self._depth == 0:
                self._limiter = self._controller().limit(limits=threads)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._limiter.restore_original_limits()
                    self._limiter = None


blas_threads = _BlasLimit()
