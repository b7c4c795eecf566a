"""Thread count for conv2d and the BLAS pool kept coherent with it.

The default thread count of a call, first match wins:

1. set_num_threads(n) in this process;
2. IM2ROW_NUM_THREADS (a positive integer; anything else is a ValueError naming it);
3. OMP_NUM_THREADS (its first value, as OpenMP reads "4,2"; an unusable value is ignored
   with one warning, as OpenMP ignores it);
4. the CPUs this process may run on: its affinity mask (sched_getaffinity, so taskset and
   cpusets count), capped by the container's CPU quota (cgroup v2 cpu.max, or v1
   cpu.cfs_quota_us / cpu.cfs_period_us, of the process's cgroup and its ancestors; a quota
   of 1.5 CPUs gives 2), at least 1.

Our own threads (OpenMP in the core) and the BLAS pool never run at once: while a call runs
its own threads, every BLAS that threadpoolctl finds (OpenBLAS, MKL, BLIS, ...) is limited to
one; when a plan hands the threads to sgemm instead, the core runs serially.  The BLAS limit is
scoped (threadpoolctl), reference-counted so overlapping calls from several Python threads
restore the user's setting only at the end."""
from __future__ import annotations

import functools
import math
import numbers
import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

_lock = threading.Lock()
_num_threads: int | None = None

# Where the kernel says which cgroup we are in, and where cgroup file systems are mounted
# (module attributes so that tests can point them at a fake tree).
PROC_CGROUP = "/proc/self/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"


def _read_text(path) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(4096)
    except (OSError, ValueError):
        return None


def _quota_v2(folder: Path) -> float | None:
    """CPUs allowed by cpu.max ('max 100000' or '<quota> <period>') in one folder."""
    text = _read_text(folder / "cpu.max")
    fields = text.split() if text else []
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _quota_v1(folder: Path) -> float | None:
    """CPUs allowed by cpu.cfs_quota_us / cpu.cfs_period_us (quota -1: none) in one folder."""
    quota, period = (_read_text(folder / name) for name in ("cpu.cfs_quota_us",
                                                             "cpu.cfs_period_us"))
    try:
        quota, period = int(quota), int(period)
    except (TypeError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _ancestors(root: Path, relative: str) -> list:
    """root/relative and each parent up to root (a limit may be set on any of them)."""
    parts = [p for p in relative.strip().split("/") if p and p != ".."]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


@functools.lru_cache(maxsize=1)
def cgroup_cpu_limit() -> float | None:
    """CPUs the process's cgroup quota allows (may be fractional), None when unlimited or not
    readable.  Read once per process."""
    root = Path(CGROUP_ROOT)
    limits = []
    for line in (_read_text(PROC_CGROUP) or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, relative = fields
        if controllers == "":                                    # v2: "0::/path"
            folders, read = _ancestors(root, relative), _quota_v2
        elif "cpu" in controllers.split(","):                    # v1: "4:cpu,cpuacct:/path"
            mount = next((root / name for name in (controllers, "cpu,cpuacct", "cpu")
                          if (root / name).is_dir()), None)
            if mount is None:
                continue
            folders, read = _ancestors(mount, relative), _quota_v1
        else:
            continue
        # a namespaced container sees its own cgroup as '/', so the root folder counts too
        limits += [cpus for cpus in map(read, folders) if cpus is not None]
    return min(limits) if limits else None


def available_cores() -> int:
    """CPUs this process may use: the affinity mask, capped by the cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


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


_omp_warned: set = set()


def _omp_threads() -> int | None:
    """OMP_NUM_THREADS's first value ('8' or '8,4' for nested levels), None if unset or
    unusable (one warning per distinct value)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not value:
        return None
    try:
        threads = int(value.split(",")[0])
    except ValueError:
        threads = 0
    if threads >= 1:
        return threads
    if value not in _omp_warned:
        _omp_warned.add(value)
        warnings.warn(f"OMP_NUM_THREADS={value!r} is not a positive integer; im2row ignores "
                      f"it", RuntimeWarning, stacklevel=3)
    return None


def get_num_threads() -> int:
    """Threads conv2d uses by default: set_num_threads(), else IM2ROW_NUM_THREADS, else
    OMP_NUM_THREADS, else the CPUs available to this process (affinity mask capped by the
    cgroup CPU quota).  See the module docstring."""
    global _default_memo
    if _num_threads is not None:
        return _num_threads
    # Every call asks (Conv2d's default): the variables are re-read each time, the CPUs
    # available once (a syscall and cgroup files cost microseconds; refresh_defaults() or
    # set_num_threads(None) reads them again after the affinity mask changes).
    key = (os.environ.get("IM2ROW_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS"))
    memo = _default_memo
    if memo is not None and memo[0] == key:
        return memo[1]
    threads = _env_threads() or _omp_threads() or available_cores()
    _default_memo = (key, threads)
    return threads


_default_memo = None


def refresh_defaults() -> None:
    """Read the CPUs available (affinity mask, cgroup quota) again at the next call."""
    global _default_memo
    _default_memo = None
    cgroup_cpu_limit.cache_clear()


def set_num_threads(threads: int | None) -> None:
    """Set the default thread count (None: back to the environment / available CPUs)."""
    global _num_threads
    if threads is not None:
        threads = check_threads(threads)
    with _lock:
        _num_threads = threads
    if threads is None:
        refresh_defaults()


def check_threads(threads) -> int:
    """A positive int (Python or NumPy integer; bool is not a count) -> int, else ValueError."""
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return int(threads)


class _BlasLimit:
    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._limiter = None
        self._blas = None

    def _controller(self):
        if self._blas is None:
            from threadpoolctl import ThreadpoolController
            self._blas = ThreadpoolController().select(user_api="blas")
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
