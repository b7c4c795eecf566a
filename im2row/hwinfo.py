"""CPU features and the active kernel ISA, detected once.

IM2ROW_ISA (scalar | avx2 | avx512 | neon) forces a kernel set at import; set_isa() changes it
later (tests use it to run every path the machine has)."""
from __future__ import annotations

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


def cpu_model() -> str:
    """Human-readable CPU model name (used in the plan cache key)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


_l2_bytes: int | None = None


def l2_cache_bytes() -> int:
    """Per-core L2 size (bytes), read once from the OS; 512 KB when it does not say."""
    global _l2_bytes
    if _l2_bytes is None:
        size = 0
        try:
            size = int(os.sysconf("SC_LEVEL2_CACHE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
        if size <= 0:
            try:
                with open("/sys/devices/system/cpu/cpu0/cache/index2/size", encoding="ascii") as f:
                    text = f.read().strip().upper()
                size = int(text.rstrip("KM")) * (1 << 20 if text.endswith("M") else 1024)
            except (OSError, ValueError):
                size = 0
        _l2_bytes = size if size > 0 else 512 * 1024
    return _l2_bytes
