"""CPU features, the CPU's identity and cache sizes, and the active kernel ISA.

IM2ROW_ISA (scalar | avx2 | avx512 | neon) forces a kernel set at import; set_isa() changes it
later (tests use it to run every path the machine has).  cpu_identity() and cache_sizes() tell
CPUs apart that share a model string (virtual machines often say just "AMD EPYC"); the plan
cache keys its plans by them."""
from __future__ import annotations

import functools
import os
import platform
import threading
import warnings

from . import _core

_lock = threading.Lock()
_active_isa: str | None = None


def available_isas() -> list:
    """Kernel ISAs compiled in and supported by this CPU, best first ('scalar' is always last)."""
    return _core.available_isas()


def cpu_features() -> dict:
    return _core.cpu_features()


# Linux sources (module attributes so that tests can point them at fake files).
CPUINFO = "/proc/cpuinfo"
CACHE_SYSFS = "/sys/devices/system/cpu/cpu0/cache"

# x86 fields (decimal in /proc/cpuinfo) and aarch64 MIDR fields (hex), per processor block.
_X86_FIELDS = {"vendor_id": "vendor", "cpu family": "family", "model": "model",
               "stepping": "stepping"}
_ARM_FIELDS = {"CPU implementer": "implementer", "CPU architecture": "architecture",
               "CPU variant": "variant", "CPU part": "part", "CPU revision": "revision"}


def _cpuinfo_blocks() -> list:
    """/proc/cpuinfo as one {field: value} dict per processor ([] where it is not readable)."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 22)
    except OSError:
        return []
    blocks = []
    for chunk in text.split("\n\n"):
        fields = {}
        for line in chunk.splitlines():
            if ":" in line:
                key, value = line.split(":", 1)
                fields.setdefault(key.strip(), value.strip())
        if fields:
            blocks.append(fields)
    return blocks


def cpu_model() -> str:
    """Human-readable CPU model name (part of the plan cache key)."""
    for block in _cpuinfo_blocks():
        for key, value in block.items():
            if key.lower() in ("model name", "hardware", "cpu model") and value:
                return value
    return platform.processor() or platform.machine()


def cpu_identity() -> dict:
    """What tells CPU generations apart beyond the model string: on x86 the vendor, family,
    model and stepping; on aarch64 the MIDR fields (implementer, architecture, variant, part,
    revision), one set per distinct core type (big.LITTLE systems have several).  {} when the
    system does not say (no /proc/cpuinfo)."""
    x86, arm = [], []
    for block in _cpuinfo_blocks():
        found = {name: block[key] for key, name in _X86_FIELDS.items() if key in block}
        if "family" in found:
            x86.append(found)
        midr = {name: block[key] for key, name in _ARM_FIELDS.items() if key in block}
        if "part" in midr:
            arm.append(midr)
    if x86:
        return x86[0]  # x86 systems are one core type as far as cpuinfo tells
    if arm:
        cores = sorted({tuple(sorted(m.items())) for m in arm})
        return {"cores": [dict(core) for core in cores]}
    return {}


_CACHE_FALLBACK = {"l1d": 32 << 10, "l2": 256 << 10, "l3": 0, "line": 64}
_SYSCONF = {"l1d": "SC_LEVEL1_DCACHE_SIZE", "l2": "SC_LEVEL2_CACHE_SIZE",
            "l3": "SC_LEVEL3_CACHE_SIZE", "line": "SC_LEVEL1_DCACHE_LINESIZE"}


def _size_bytes(text: str) -> int:
    """sysfs cache sizes: '32K', '1024K', '32M', '512' -> bytes."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


_SYSFS_LEVELS = {(1, "Data"): "l1d", (2, "Unified"): "l2", (2, "Data"): "l2",
                 (3, "Unified"): "l3"}


def _positive(read):
    """read() if it gives a positive int, else None (missing file, odd text, -1, 0)."""
    try:
        value = int(read())
    except (OSError, ValueError, TypeError):
        return None
    return value if value > 0 else None


def _sysfs_caches() -> dict:
    found = {}
    try:
        folders = sorted(n for n in os.listdir(CACHE_SYSFS) if n.startswith("index"))
    except OSError:
        return found
    for name in folders:
        def read(field, folder=os.path.join(CACHE_SYSFS, name)):
            with open(os.path.join(folder, field), encoding="ascii") as f:
                return f.read(64).strip()
        try:
            key = _SYSFS_LEVELS.get((int(read("level")), read("type")))
            size = _size_bytes(read("size")) if key else 0
        except (OSError, ValueError):
            continue
        if key and size > 0:
            found[key] = size
            line = _positive(lambda: read("coherency_line_size")) if key == "l1d" else None
            if line:
                found["line"] = line
    return found


@functools.lru_cache(maxsize=1)
def _cache_sizes() -> tuple:
    found = _sysfs_caches()
    # Where sysfs says nothing, the core's own detection (cpuid leaves 4 / 0x8000001D on
    # x86, CTR_EL0's line size on aarch64): the same source the GEMM blocking model reads.
    core = _core.cache_info()
    if core.get("source") not in (None, "sysfs", "fallback"):
        for key in ("l1d", "l2", "l3", "line"):
            if key not in found and core.get(key, 0) > 0:
                found[key] = int(core[key])
    for key, name in _SYSCONF.items():
        if key not in found and hasattr(os, "sysconf") and name in getattr(os, "sysconf_names", {}):
            value = _positive(lambda: os.sysconf(name))
            if value:
                found[key] = value
    return tuple((key, found.get(key, fallback)) for key, fallback in _CACHE_FALLBACK.items())


def cache_sizes() -> dict:
    """{'l1d', 'l2', 'l3', 'line'}: bytes of the L1 data cache, L2 and L3 of one core (cpu0)
    and the L1 line size; the single place Python asks.  From sysfs
    (/sys/devices/system/cpu/cpu0/cache/index*), else the core's cpuid / CTR_EL0 detection
    (kernels/cpuinfo.c), else sysconf, else 32 KiB / 256 KiB / 0
    (no L3 known) / 64.  Read once per process."""
    return dict(_cache_sizes())


def _initial_isa() -> str:
    forced = os.environ.get("IM2ROW_ISA", "").strip().lower()
    isas = available_isas()
    if forced and forced != "auto":
        if forced in isas:
            return forced
        warnings.warn(f"IM2ROW_ISA={forced!r} is not available on this machine "
                      f"(available: {isas}); using {isas[0]!r}", RuntimeWarning, stacklevel=3)
    return isas[0]


def get_isa() -> str:
    """The kernel ISA that new plans use."""
    global _active_isa
    with _lock:
        if _active_isa is None:
            _active_isa = _initial_isa()
        return _active_isa


def set_isa(isa: str) -> None:
    """Force a kernel ISA for plans made from now on ('auto' = the best available)."""
    global _active_isa
    if not isinstance(isa, str):
        raise TypeError(f"isa must be a string such as 'auto' or 'avx2', got {isa!r}")
    isas = available_isas()
    name = isa.lower()
    if name == "auto":
        name = isas[0]
    if name not in isas:
        raise ValueError(f"ISA {isa!r} is not available on this machine; available: {isas}")
    with _lock:
        _active_isa = name


def kernel_set(isa: str):
    return _core.kernel_set(isa)

