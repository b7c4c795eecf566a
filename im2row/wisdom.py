"""The plan cache ("wisdom"): tuned plans on disk, looked up at run time.

Runtime side only: this module never imports optuna (the tuner, im2row.tuner, writes plans
through record_plan()).  When im2row is imported, install() registers a lookup with
im2row.plan.set_tuned_lookup; the cache file is read on the first lookup and kept in memory,
so Conv2d / conv2d pick tuned plans with no code change and untuned shapes keep the default.

File (JSON, schema 1):

    {"format": "im2row-plans", "schema": 1,
     "machines": {
        "<machine id>": {
            "identity": {"cpu": ..., "cpu_id": {"family", "model", "stepping", ...  (x86)
                                                | "cores": [{"implementer", "part", ...}]},
                         "caches": {"l1d", "l2", "l3", "line"}, "arch": ...,
                         "cpu_features": [...], "isas": [...],
                         "blas": {"name", "version", "architecture", "threading"},
                         "im2row": "0.1.0", "build": "<hash of the compiled core>"},
            "plans": {
                "<plan key>": {"spec": {ConvSpec fields}, "dtype": "float32", "threads": 2,
                               "active_isa": "avx512", "plan": {Plan fields},
                               "time_s": ..., "default_time_s": ..., "default_plan": {...},
                               "trials": ..., "tuned_at": "2025-01-01T00:00:00Z"}}}}}

The machine id hashes the identity: plans are used only on the same CPU (model string, x86
family/model/stepping or aarch64 MIDR implementer/part/variant, cache sizes) and ISA flags,
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
import math
import os
import platform
import stat
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
        "cpu_id": hwinfo.cpu_identity(),
        "caches": hwinfo.cache_sizes(),
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
    # keyed as the runtime plans it (a column convolution as its row form)
    spec = spec.oriented()
    return f"{DTYPE}|t={int(threads)}|isa={active_isa}|batch={spec.batch}|{shape_key(spec)}"


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- files ------------------------------------------------------------------------------------

def _empty_document() -> dict:
    return {"format": FORMAT, "schema": SCHEMA, "machines": {}}


class CacheProblem(Exception):
    """Why a cache file cannot be read or written (corrupt, hostile, unreadable, unwritable)."""


MAX_FILE_BYTES = 64 << 20   # far above any real cache; a bigger "cache" is not one
MAX_DEPTH = 32              # the schema nests 6 deep; deeper is hostile (RecursionError bait)
MAX_THREADS = 1 << 16


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes, None if it does not exist.  Opened non-blocking and checked to be a
    regular file first, so a FIFO or device at the path cannot hang or flood the reader."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CacheProblem(f"unreadable ({getattr(exc, 'strerror', None) or exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CacheProblem("not a regular file")
        raise CacheProblem(f"{info.st_size} bytes, more than a plan cache holds "
                           f"({MAX_FILE_BYTES})")
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise CacheProblem(f"unreadable ({exc.strerror or exc})") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _too_deep(data) -> bool:
    """Nested deeper than MAX_DEPTH (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return False


def _parse(raw: bytes):
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise CacheProblem("corrupt: JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CacheProblem(f"corrupt or truncated JSON ({exc})") from None
    if _too_deep(data):
        raise CacheProblem(f"corrupt: JSON nested more than {MAX_DEPTH} deep")
    return data


# -- entry checks: a plan entry is applied only if every field is what record() writes ----------

def _is_int(value) -> bool:
    return type(value) is int  # noqa: E721  (bool, float and numpy scalars are not plan fields)


def _checked_spec(data) -> ConvSpec:
    from .spec import LAYOUTS, make_spec

    if not isinstance(data, dict) or set(data) != set(_SPEC_FIELDS):
        raise ValueError("'spec' does not have the ConvSpec fields")
    for name, value in data.items():
        if name == "layout":
            if value not in LAYOUTS:
                raise ValueError(f"spec layout {value!r}")
        elif not _is_int(value) or not 0 <= value < 1 << 62:
            raise ValueError(f"spec field {name}={value!r}")
    spec = ConvSpec(**data)
    again = make_spec(spec.input_shape, spec.weight_shape, stride=(spec.stride_h, spec.stride_w),
                      padding=(spec.pad_top, spec.pad_left, spec.pad_bottom, spec.pad_right),
                      dilation=(spec.dilation_h, spec.dilation_w), groups=spec.groups,
                      layout=spec.layout)
    if again != spec:
        raise ValueError("'spec' is not a valid convolution")
    return spec


def _checked_plan(data, spec: ConvSpec, name: str = "plan") -> Plan:
    if not isinstance(data, dict):
        raise ValueError(f"'{name}' is not an object")
    plan = Plan.from_dict(data)
    defaults = Plan()
    for field in data:
        if type(getattr(plan, field)) is not type(getattr(defaults, field)):
            raise ValueError(f"{name} field {field}={getattr(plan, field)!r} has the wrong type")
    _plan_module.validate_plan(spec, plan)
    return plan


def _optional_number(entry: dict, name: str) -> None:
    value = entry.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e9:
        raise ValueError(f"{name}={value!r}")


def checked_entry(key: str, entry) -> tuple:
    """(slot, batch, plan) of a plan entry for this machine; ValueError saying what is wrong.
    slot = (threads, active ISA, shape key), the index key of lookup()."""
    if not isinstance(entry, dict):
        raise ValueError(f"not an object but {type(entry).__name__}")
    try:
        spec = _checked_spec(entry.get("spec"))
        plan = _checked_plan(entry.get("plan"), spec)
        threads, isa = entry.get("threads"), entry.get("active_isa")
        if not _is_int(threads) or not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"threads={threads!r}")
        if isa not in hwinfo.available_isas():
            raise ValueError(f"active_isa={isa!r} is not available here")
        if entry.get("default_plan") is not None:
            _checked_plan(entry["default_plan"], spec, "default_plan")
        for name in ("time_s", "default_time_s", "trials", "space"):
            _optional_number(entry, name)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    if key != plan_key(spec, threads, isa):
        raise ValueError("the key does not match the entry's spec, threads and ISA")
    return (threads, isa, shape_key(spec)), spec.batch, plan


# The cost model's measured host rates (costmodel.Host), stored per kernel ISA beside the
# plans, so that every process on this machine ranks untuned shapes alike.
HOST_FIELDS = ("gemm_flops", "copy_l2", "copy_l3", "copy_mem", "call_s")


def checked_host(isa: str, entry) -> dict:
    """{field: float} of a stored host entry for this machine; ValueError saying what is
    wrong."""
    if isa not in hwinfo.available_isas():
        raise ValueError(f"host ISA {isa!r} is not available here")
    if not isinstance(entry, dict):
        raise ValueError(f"host {isa!r}: not an object but {type(entry).__name__}")
    rates = {}
    for name in HOST_FIELDS:
        value = entry.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"host {isa!r}: {name}={value!r}")
        if not (math.isfinite(value) and (value >= 0 if name == "call_s" else value > 0)):
            raise ValueError(f"host {isa!r}: {name}={value!r}")
        rates[name] = float(value)
    return rates


def _usable_entries(entries: dict, check, mine: bool, bad: list, label=str) -> dict:
    """The entries that pass check(key, entry) (this machine's) or are objects at all
    (another machine's: kept for it, never applied here); the others go to bad."""
    usable = {}
    for key, entry in entries.items():
        try:
            if mine:
                check(key, entry)
            elif not isinstance(entry, dict):
                raise ValueError(f"not an object but {type(entry).__name__}")
        except ValueError as exc:
            bad.append((label(key), str(exc)))
            continue
        usable[key] = entry
    return usable


def _checked_document(data) -> tuple:
    """(document with only usable entries, [(key, reason), ...] of what was dropped).
    Machines are re-keyed by their identity: an edited identity is another machine.  This
    machine's entries are checked field by field; other machines' need only be objects (they
    are kept for those machines, never applied here)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CacheProblem("not an im2row plan cache")
    if data.get("schema") != SCHEMA:
        raise CacheProblem(f"schema version {data.get('schema')!r}, this im2row reads {SCHEMA}")
    machines = data.get("machines")
    if not isinstance(machines, dict):
        raise CacheProblem("corrupt: 'machines' is not an object")
    here = machine_id()
    bad = []
    rekeyed = {}
    for mid, group in machines.items():
        if (not isinstance(group, dict) or not isinstance(group.get("identity"), dict)
                or not isinstance(group.get("plans"), dict)):
            bad.append((mid, "machine without identity/plans objects"))
            continue
        try:
            mid = _identity_id(group["identity"])
        except (TypeError, ValueError, RecursionError):
            bad.append((mid, "unreadable identity"))
            continue
        dest = rekeyed.setdefault(mid, {"identity": group["identity"], "plans": {}})
        dest["plans"].update(_usable_entries(group["plans"], checked_entry, mid == here, bad))
        hosts = group.get("hosts", {})
        if not isinstance(hosts, dict):
            bad.append((f"{mid} hosts", "not an object"))
            continue
        hosts = _usable_entries(hosts, checked_host, mid == here, bad, lambda isa: f"host {isa}")
        if hosts:
            dest.setdefault("hosts", {}).update(hosts)
    data["machines"] = rekeyed
    return data, bad


def read_document(path) -> tuple:
    """(parsed file, bad entries) -- (None, []) if it does not exist; CacheProblem if the file
    as a whole is unusable.  Bad entries, [(key, reason)], are left out of the document."""
    raw = _read_bytes(Path(path))
    if raw is None:
        return None, []
    return _checked_document(_parse(raw))


def describe_bad(bad: list, limit: int = 3) -> str:
    """'2 invalid plan entries ignored: 'k' (reason), ...' for a warning or report."""
    parts = [f"{key!r} ({reason})" for key, reason in bad[:limit]]
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    noun = "entry" if len(bad) == 1 else "entries"
    return f"{len(bad)} invalid plan {noun} ignored: " + "; ".join(parts) + more


def _merge_into(target: dict, source: dict) -> int:
    """Merge source's machines/plans into target (newer tuned_at wins). Returns plans added
    or replaced.  Both hold checked documents (entries are objects)."""
    changed = 0
    for mid, group in source.get("machines", {}).items():
        dest = target["machines"].setdefault(
            mid, {"identity": group.get("identity", {}), "plans": {}})
        for key, entry in group.get("plans", {}).items():
            old = dest["plans"].get(key)
            if old is None or str(entry.get("tuned_at", "")) >= str(old.get("tuned_at", "")):
                dest["plans"][key] = entry
                changed += 1
        for isa, entry in group.get("hosts", {}).items():
            old = dest.setdefault("hosts", {}).get(isa)
            if old is None or str(entry.get("measured_at", "")) >= str(old.get("measured_at", "")):
                dest["hosts"][isa] = entry
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


def merge_into_file(path, document: dict, warn=None) -> None:
    """Merge `document` into the cache file at path: under the lock, read, merge, replace.
    A corrupt file or bad entries are replaced, with warn(message) (default: a warning);
    CacheProblem when the file cannot be written (the reason in words)."""
    path = Path(path)
    warn = warn or (lambda message: warnings.warn(
        f"im2row plan cache {path}: {message}; replacing it", RuntimeWarning, stacklevel=4))
    try:
        if os.path.lexists(path) and not path.is_file():
            raise CacheProblem("not a regular file; left as it is")
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path):
            try:
                current, bad = read_document(path)
            except CacheProblem as exc:
                warn(str(exc))
                current, bad = None, []
            if bad:
                warn(describe_bad(bad))
            merged = current if current is not None else _empty_document()
            _merge_into(merged, document)
            _atomic_write(path, merged)
    except OSError as exc:  # read-only, a directory or a file in the way, lock timeout, ...
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise CacheProblem(f"cannot write ({reason})") from None


# -- the in-memory store ----------------------------------------------------------------------

_CONSEQUENCE = {"read": "using default plans for those shapes",
                "replace": "writing the plans in memory over it",
                "write": "the plans are kept in memory only"}


def _problem_text(path, message: str, kind: str) -> str:
    return f"im2row plan cache {path}: {message}; {_CONSEQUENCE[kind]}"


class PlanStore:
    """Plans in memory (every machine's, as read), with an index for this machine."""

    def __init__(self):
        self._lock = threading.RLock()
        self._document = _empty_document()
        self._index: dict = {}          # (threads, isa, shape_key) -> {batch: Plan}
        self._auto_load = True          # read the default cache file on the first lookup
        self._warned: set = set()
        self._write_failures: dict = {}  # absolute path -> why the last write failed

    # state ----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the state at import: nothing in memory, default file read on first use."""
        with self._lock:
            self._document = _empty_document()
            self._index = {}
            self._auto_load = True
            self._warned = set()
            self._write_failures = {}

    def forget(self) -> None:
        with self._lock:
            self._document = _empty_document()
            self._index = {}
            self._auto_load = False

    def _warn_once(self, path, message: str, kind: str = "read") -> None:
        """One warning per file for the life of the process (or until reset()): the first
        problem met, with what follows from it ('read': the file's plans are not used,
        'replace': a writer replaces what it cannot use, 'write': plans stay in memory)."""
        key = os.path.abspath(os.fspath(path))
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(_problem_text(path, message, kind), RuntimeWarning, stacklevel=4)

    def _rebuild_index(self) -> None:
        """Index this machine's plans (entries in memory are checked: see checked_entry)."""
        index: dict = {}
        group = self._document["machines"].get(machine_id())
        for key, entry in (group or {}).get("plans", {}).items():
            if entry.get("dtype", DTYPE) != DTYPE:
                continue
            try:
                slot, batch, plan = checked_entry(key, entry)
            except ValueError:  # read entries are checked already; never index a bad one
                continue
            index.setdefault(slot, {})[batch] = plan
        self._index = index

    # reading --------------------------------------------------------------------------------
    def load(self, path, *, explicit: bool) -> int:
        """Merge a cache file into memory; returns how many plans it holds for this machine.
        Problems are warned about once per file, never raised; bad entries are named in the
        warning and left out."""
        path = Path(path)
        try:
            document, bad = read_document(path)
        except CacheProblem as exc:
            self._warn_once(path, str(exc))
            return 0
        with self._lock:
            if document is None:
                if explicit:
                    self._warn_once(path, "no such file")
                return 0
            _merge_into(self._document, document)
            self._rebuild_index()
            total = sum(len(g["plans"]) for g in document["machines"].values())
            mine = len(document["machines"].get(machine_id(), {}).get("plans", {}))
        if bad:
            self._warn_once(path, describe_bad(bad))
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

    def host(self, isa: str) -> dict | None:
        """This machine's stored host rates for a kernel ISA ({field: float}), or None."""
        try:
            self._ensure_loaded()
            with self._lock:
                group = self._document["machines"].get(machine_id()) or {}
                entry = group.get("hosts", {}).get(isa)
            return None if entry is None else checked_host(isa, entry)
        except Exception:  # a stored host is an optimisation: measure instead
            return None

    # writing --------------------------------------------------------------------------------
    def record_host(self, isa: str, rates: dict, path=None) -> None:
        """Store the cost model's host rates for an ISA in memory and, when path is given, in
        that cache file (a write failure warns once, as for plans)."""
        entry = dict(checked_host(isa, rates), measured_at=_utc_now())
        group = {"identity": machine_identity(), "plans": {}, "hosts": {isa: entry}}
        self._ensure_loaded()
        with self._lock:
            _merge_into(self._document, {"machines": {machine_id(): group}})
        if path is not None:
            self.write(Path(path), {"machines": {machine_id(): group}})

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

    def write(self, path, document: dict) -> bool:
        """Merge document into the file at path.  On failure: one warning per path, the reason
        kept for write_failure(path), False; the plans stay in memory either way."""
        path = Path(path)
        failures_key = os.path.abspath(os.fspath(path))
        try:
            merge_into_file(path, document,
                            warn=lambda message: self._warn_once(path, message, "replace"))
        except CacheProblem as exc:
            with self._lock:
                self._write_failures[failures_key] = str(exc)
            self._warn_once(path, str(exc), kind="write")
            return False
        with self._lock:
            self._write_failures.pop(failures_key, None)
        return True

    def write_failure(self, path) -> str | None:
        """Why the last write to path failed, None if it succeeded (or none was tried)."""
        if path is None:
            return None
        with self._lock:
            return self._write_failures.get(os.path.abspath(os.fspath(path)))

    def record(self, spec: ConvSpec, plan: Plan, *, threads: int, path=None,
               active_isa: str | None = None, **meta) -> dict:
        """Store one tuned plan in memory and merge it into the cache file (path, else the
        default cache; nothing is written when the cache is off).  A file that cannot be
        written gives one warning (see write()); the plan is in memory regardless."""
        key, entry = self.make_entry(spec, plan, threads=threads, active_isa=active_isa, **meta)
        self.add({key: entry})
        target = Path(path) if path is not None else default_cache_path()
        if target is not None:
            self.write(target, {"machines": {machine_id(): {
                "identity": machine_identity(), "plans": {key: entry}}}})
        return entry

    def save(self, path) -> int:
        """Write every plan in memory to path; the number written (0, with a warning, when
        the file cannot be written)."""
        self._ensure_loaded()
        with self._lock:
            snapshot = json.loads(json.dumps(self._document))
        if not self.write(path, snapshot):
            # an explicit save always says why it wrote nothing
            warnings.warn(_problem_text(path, self.write_failure(path), "write"),
                          RuntimeWarning, stacklevel=3)
            return 0
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
    Without a path, to the default cache.  Returns the number of plans written; a file that
    cannot be written gives one warning and 0 (the plans stay in memory)."""
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
               "plans": 0, "plans_here": 0, "bad": 0, "problem": None}
    if path is None:
        summary["problem"] = f"disabled ({ENV_VAR}=off)"
        return summary
    try:
        document, bad = read_document(path)
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
    summary["bad"] = len(bad)
    if bad:
        summary["problem"] = describe_bad(bad)
    return summary
