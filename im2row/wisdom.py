"""The plan cache ("wisdom"): tuned plans on disk, looked up at run time.

Runtime side only: this module never imports optuna (the tuner, im2row.tuner, writes plans
through record_plan()).  When im2row is imported, install() registers a lookup with
im2row.plan.set_tuned_lookup; the cache file is read on the first lookup and kept in memory,
so Conv2d / conv2d pick tuned plans with no code change and untuned shapes keep the default.

File (JSON, schema 1):

    {"format": "im2row-plans", "schema": 1,
     "machines": {
        "<machine id>": {
            "identity": {"cpu": ..., "arch": ..., "cpu_features": [...], "isas": [...],
                         "blas": {"name", "version", "architecture", "threading"},
                         "im2row": "0.1.0", "build": "<hash of the compiled core>"},
            "plans": {
                "<plan key>": {"spec": {ConvSpec fields}, "dtype": "float32", "threads": 2,
                               "active_isa": "avx512", "plan": {Plan fields},
                               "time_s": ..., "default_time_s": ..., "default_plan": {...},
                               "trials": ..., "tuned_at": "2025-01-01T00:00:00Z"}}}}}

The machine id hashes the identity: plans are used only on the same CPU model and ISA flags,
with the same BLAS build and the same im2row version and compiled core (FFTW's rule: wisdom is
valid for the same hardware and binaries).  One file may hold several machines' plans (a file
shipped with an application).  Within a machine, a plan key is the thread count, the active
kernel ISA (hwinfo.get_isa(), so set_isa/IM2ROW_ISA runs are never given tuned plans for
another ISA) and every ConvSpec field, batch included.  Conv2d prepares one plan per
per-image shape and looks it up with batch 1; when the exact batch was not tuned, the entry of
the same shape with the smallest tuned batch is used.

Where: IM2ROW_PLAN_CACHE (a path; 'off' disables tuned plans), else
$XDG_CACHE_HOME/im2row/plans.json (~/.cache/im2row/plans.json).  Writes are atomic (temporary
file in the same folder + os.replace) and merge with what is on disk under a lock on
'<file>.lock' (filelock if installed, else fcntl.flock), so concurrent tuners keep each other's
plans.  A corrupt, unreadable, foreign (other machine or version) cache is ignored with one
warning per file; it is never fatal.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import os
import platform
import sys
import tempfile
import threading
import warnings
from pathlib import Path

from . import hwinfo, plan as _plan_module
from ._version import __version__
from .plan import Plan
from .spec import ConvSpec

FORMAT = "im2row-plans"
SCHEMA = 1
ENV_VAR = "IM2ROW_PLAN_CACHE"
DTYPE = "float32"
LOCK_TIMEOUT_S = 120.0
_DISABLED = {"off", "none", "0", "false", "no", "disable", "disabled"}

_SPEC_FIELDS = tuple(ConvSpec.__dataclass_fields__)


# -- where ------------------------------------------------------------------------------------

def default_cache_path() -> Path | None:
    """The plan cache file: $IM2ROW_PLAN_CACHE, else the user's cache directory.
    None when IM2ROW_PLAN_CACHE=off."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        if env.lower() in _DISABLED:
            return None
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg:
        base = Path(xdg)
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif sys.platform.startswith("win") and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path.home() / ".cache"
    return base / "im2row" / "plans.json"


# -- who: the machine fingerprint -------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def blas_info() -> dict:
    """The BLAS that the core's sgemm calls (SciPy's OpenBLAS), from threadpoolctl; cached."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (loaded already by the core)
        from threadpoolctl import threadpool_info
        infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # threadpoolctl missing or failing: identify what we can
        infos = []
    if not infos:
        return {"name": "unknown", "version": None, "architecture": None, "threading": None,
                "num_threads": None, "filepath": None}

    def scipy_first(info):
        folder = os.path.dirname(str(info.get("filepath") or "")).lower()
        return 0 if ("scipy" in folder and "numpy" not in folder) else 1

    info = sorted(infos, key=scipy_first)[0]
    return {"name": info.get("internal_api"), "version": info.get("version"),
            "architecture": info.get("architecture"), "threading": info.get("threading_layer"),
            "num_threads": info.get("num_threads"), "filepath": info.get("filepath")}


@functools.lru_cache(maxsize=1)
def _build_hash() -> str:
    from . import _core
    try:
        with open(_core.__file__, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except (OSError, AttributeError, TypeError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def machine_identity() -> dict:
    """Everything a tuned plan's timing depends on besides the shape and thread count."""
    blas = blas_info()
    return {
        "cpu": hwinfo.cpu_model(),
        "arch": platform.machine(),
        "cpu_features": sorted(k for k, v in hwinfo.cpu_features().items() if v),
        "isas": list(hwinfo.available_isas()),
        "blas": {k: blas[k] for k in ("name", "version", "architecture", "threading")},
        "im2row": __version__,
        "build": _build_hash(),
    }


def _identity_id(identity: dict) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def machine_id() -> str:
    return _identity_id(machine_identity())


def current_threads() -> int:
    """The thread count a conv2d call runs with by default (part of the plan key)."""
    from ._threads import get_num_threads

    return int(get_num_threads())


# -- keys -------------------------------------------------------------------------------------

def shape_key(spec: ConvSpec) -> str:
    """Every ConvSpec field but batch, in a readable canonical form."""
    return ",".join(f"{name}={getattr(spec, name)}" for name in _SPEC_FIELDS if name != "batch")


def plan_key(spec: ConvSpec, threads: int, active_isa: str) -> str:
    return f"{DTYPE}|t={int(threads)}|isa={active_isa}|batch={spec.batch}|{shape_key(spec)}"


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- files ------------------------------------------------------------------------------------

def _empty_document() -> dict:
    return {"format": FORMAT, "schema": SCHEMA, "machines": {}}


class CacheProblem(Exception):
    """Why a cache file cannot be used (corrupt, unreadable, other schema)."""


def read_document(path) -> dict | None:
    """The parsed file, None if it does not exist; CacheProblem if it is unusable."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheProblem(f"unreadable ({exc.strerror or exc})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CacheProblem(f"corrupt or truncated JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CacheProblem("not an im2row plan cache")
    if data.get("schema") != SCHEMA:
        raise CacheProblem(f"schema version {data.get('schema')!r}, this im2row reads {SCHEMA}")
    machines = data.get("machines")
    if not isinstance(machines, dict):
        raise CacheProblem("corrupt: 'machines' is not an object")
    rekeyed = {}
    for mid, group in machines.items():
        if (not isinstance(group, dict) or not isinstance(group.get("identity"), dict)
                or not isinstance(group.get("plans"), dict)):
            raise CacheProblem(f"corrupt: machine {mid!r} lacks identity/plans")
        # The id is recomputed from the identity itself: an edited identity is another machine.
        dest = rekeyed.setdefault(_identity_id(group["identity"]),
                                  {"identity": group["identity"], "plans": {}})
        dest["plans"].update(group["plans"])
    data["machines"] = rekeyed
    return data


def _merge_into(target: dict, source: dict) -> int:
    """Merge source's machines/plans into target (newer tuned_at wins). Returns plans added
    or replaced."""
    changed = 0
    for mid, group in source.get("machines", {}).items():
        dest = target["machines"].setdefault(
            mid, {"identity": group.get("identity", {}), "plans": {}})
        for key, entry in group.get("plans", {}).items():
            old = dest["plans"].get(key)
            if old is None or str(entry.get("tuned_at", "")) >= str(old.get("tuned_at", "")):
                dest["plans"][key] = entry
                changed += 1
    return changed


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive lock on '<path>.lock' across processes: filelock if installed, else
    fcntl.flock (same kernel lock, so the two interoperate); no lock where neither exists."""
    lock_path = str(path) + ".lock"
    try:
        import filelock
    except ImportError:
        filelock = None
    if filelock is not None:
        with filelock.FileLock(lock_path, timeout=LOCK_TIMEOUT_S):
            yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows without filelock
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _atomic_write(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(tmp, 0o644)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def merge_into_file(path, document: dict) -> None:
    """Merge `document` into the cache file at path: under the lock, read, merge, replace."""
    path = Path(path)
    with _file_lock(path):
        try:
            current = read_document(path)
        except CacheProblem as exc:
            warnings.warn(f"im2row plan cache {path}: {exc}; replacing it", RuntimeWarning,
                          stacklevel=3)
            current = None
        merged = current if current is not None else _empty_document()
        _merge_into(merged, document)
        _atomic_write(path, merged)


# -- the in-memory store ----------------------------------------------------------------------

class PlanStore:
    """Plans in memory (every machine's, as read), with an index for this machine."""

    def __init__(self):
        self._lock = threading.RLock()
        self._document = _empty_document()
        self._index: dict = {}          # (threads, isa, shape_key) -> {batch: Plan}
        self._auto_load = True          # read the default cache file on the first lookup
        self._warned: set = set()

    # state ----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the state at import: nothing in memory, default file read on first use."""
        with self._lock:
            self._document = _empty_document()
            self._index = {}
            self._auto_load = True
            self._warned = set()

    def forget(self) -> None:
        with self._lock:
            self._document = _empty_document()
            self._index = {}
            self._auto_load = False

    def _warn_once(self, path, message: str) -> None:
        key = os.path.abspath(os.fspath(path))
        if key in self._warned:
            return
        self._warned.add(key)
        warnings.warn(f"im2row plan cache {path}: {message}; using default plans for "
                      f"those shapes", RuntimeWarning, stacklevel=4)

    def _rebuild_index(self) -> int:
        """Index this machine's plans; returns how many entries could not be read."""
        index: dict = {}
        bad = 0
        group = self._document["machines"].get(machine_id())
        for entry in (group or {}).get("plans", {}).values():
            try:
                spec = ConvSpec(**entry["spec"])
                plan = Plan.from_dict(entry["plan"])
                slot = (int(entry["threads"]), str(entry["active_isa"]), shape_key(spec))
                if entry.get("dtype", DTYPE) != DTYPE:
                    continue
            except (KeyError, TypeError, ValueError):
                bad += 1
                continue
            index.setdefault(slot, {})[spec.batch] = plan
        self._index = index
        return bad

    # reading --------------------------------------------------------------------------------
    def load(self, path, *, explicit: bool) -> int:
        """Merge a cache file into memory; returns how many plans it holds for this machine.
        Problems are warned about once per file, never raised."""
        path = Path(path)
        try:
            document = read_document(path)
        except CacheProblem as exc:
            with self._lock:
                self._warn_once(path, str(exc))
            return 0
        with self._lock:
            if document is None:
                if explicit:
                    self._warn_once(path, "no such file")
                return 0
            _merge_into(self._document, document)
            bad = self._rebuild_index()
            total = sum(len(g["plans"]) for g in document["machines"].values())
            mine = len(document["machines"].get(machine_id(), {}).get("plans", {}))
            if bad:
                self._warn_once(path, f"{bad} unreadable plan entr{'y' if bad == 1 else 'ies'}")
            elif total and not mine:
                ident = machine_identity()
                self._warn_once(path, (
                    f"its {total} plan(s) were tuned on another machine or im2row build "
                    f"(this one: {ident['cpu']!r}, ISAs {ident['isas']}, "
                    f"{ident['blas']['name']} {ident['blas']['version']}, "
                    f"im2row {ident['im2row']} build {ident['build']})"))
            return mine

    def _ensure_loaded(self) -> None:
        if not self._auto_load:
            return
        with self._lock:
            if not self._auto_load:
                return
            self._auto_load = False
            path = default_cache_path()
            if path is not None:
                self.load(path, explicit=False)

    def lookup(self, spec: ConvSpec, threads: int | None = None) -> Plan | None:
        """The tuned plan for spec under the current thread count and ISA, or None."""
        try:
            self._ensure_loaded()
            index = self._index
            if not index:
                return None
            if threads is None:
                threads = current_threads()
            by_batch = index.get((int(threads), hwinfo.get_isa(), shape_key(spec)))
            if not by_batch:
                return None
            plan = by_batch.get(spec.batch)
            return plan if plan is not None else by_batch[min(by_batch)]
        except Exception as exc:  # a lookup must never break a convolution
            with self._lock:
                self._warn_once("<lookup>", f"lookup failed ({exc!r})")
            return None

    def entry(self, spec: ConvSpec, threads: int, active_isa: str | None = None) -> dict | None:
        """The stored entry (plan and timings) for exactly this spec, or None."""
        self._ensure_loaded()
        active_isa = active_isa or hwinfo.get_isa()
        group = self._document["machines"].get(machine_id())
        if not group:
            return None
        return group["plans"].get(plan_key(spec, threads, active_isa))

    def count(self) -> int:
        self._ensure_loaded()
        group = self._document["machines"].get(machine_id())
        return len(group["plans"]) if group else 0

    # writing --------------------------------------------------------------------------------
    def make_entry(self, spec: ConvSpec, plan: Plan, *, threads: int, active_isa: str | None = None,
                   **meta) -> tuple:
        active_isa = active_isa or hwinfo.get_isa()
        entry = {"spec": spec.to_dict(), "dtype": DTYPE, "threads": int(threads),
                 "active_isa": active_isa, "plan": plan.to_dict(), "tuned_at": _utc_now()}
        entry.update(meta)
        return plan_key(spec, threads, active_isa), entry

    def add(self, entries: dict) -> None:
        """Add {plan key: entry} for this machine to memory."""
        document = {"machines": {machine_id(): {"identity": machine_identity(),
                                                "plans": dict(entries)}}}
        self._ensure_loaded()
        with self._lock:
            _merge_into(self._document, document)
            self._rebuild_index()

    def record(self, spec: ConvSpec, plan: Plan, *, threads: int, path=None,
               active_isa: str | None = None, **meta) -> dict:
        """Store one tuned plan in memory and merge it into the cache file (path, else the
        default cache; nothing is written when the cache is off)."""
        key, entry = self.make_entry(spec, plan, threads=threads, active_isa=active_isa, **meta)
        self.add({key: entry})
        target = Path(path) if path is not None else default_cache_path()
        if target is not None:
            merge_into_file(target, {"machines": {machine_id(): {
                "identity": machine_identity(), "plans": {key: entry}}}})
        return entry

    def save(self, path) -> int:
        self._ensure_loaded()
        with self._lock:
            snapshot = json.loads(json.dumps(self._document))
        merge_into_file(path, snapshot)
        return sum(len(g["plans"]) for g in snapshot["machines"].values())


_store = PlanStore()


def store() -> PlanStore:
    return _store


def _lookup(spec: ConvSpec, threads: int | None = None) -> Plan | None:
    return _store.lookup(spec, threads)


def install() -> None:
    """Register the cache with the planner (done when im2row is imported)."""
    _plan_module.set_tuned_lookup(_lookup)


# -- public API (re-exported by im2row) --------------------------------------------------------

def load_plans(path=None) -> int:
    """Read plans from a file into memory (merged with those already there): e.g. plans shipped
    with an application.  Without a path, (re)reads the default cache.  Returns the number of
    plans the file holds for this machine; unusable files give one warning, never an error."""
    if path is None:
        path = default_cache_path()
        if path is None:
            return 0
        return _store.load(path, explicit=False)
    return _store.load(path, explicit=True)


def save_plans(path=None) -> int:
    """Write every plan in memory to a file (merged with what the file holds), atomically.
    Without a path, to the default cache.  Returns the number of plans written."""
    if path is None:
        path = default_cache_path()
        if path is None:
            raise ValueError(f"the plan cache is disabled ({ENV_VAR}=off); pass a path")
    return _store.save(path)


def forget_plans() -> None:
    """Drop every plan held in memory: default plans from now on, and the cache file is not
    read again in this process until load_plans() is called."""
    _store.forget()


def record_plan(spec: ConvSpec, plan: Plan, *, threads: int, path=None, **meta) -> dict:
    """Store a tuned plan (used by im2row.tuner)."""
    return _store.record(spec, plan, threads=threads, path=path, **meta)


def cache_summary(path=None) -> dict:
    """For `python -m im2row info`: where the cache is and what it holds."""
    path = Path(path) if path is not None else default_cache_path()
    summary = {"path": None if path is None else str(path), "exists": False, "machines": 0,
               "plans": 0, "plans_here": 0, "problem": None}
    if path is None:
        summary["problem"] = f"disabled ({ENV_VAR}=off)"
        return summary
    try:
        document = read_document(path)
    except CacheProblem as exc:
        summary["exists"] = True
        summary["problem"] = str(exc)
        return summary
    if document is None:
        return summary
    summary["exists"] = True
    summary["machines"] = len(document["machines"])
    summary["plans"] = sum(len(g["plans"]) for g in document["machines"].values())
    summary["plans_here"] = len(document["machines"].get(machine_id(), {}).get("plans", {}))
    return summary
