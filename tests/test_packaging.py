"""Build hygiene (issue 13): the dispatch table references every SIMD kernel of the target
architecture strongly, so a build missing one ISA file fails to link instead of silently
offering fewer ISAs.  (The sdist -> wheel -> fresh venv round trip, which also checks that
the sdist holds every kernel file, is .ci/check-dist.sh, run by .ci/run.)"""
from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from conftest import NO_SUBPROCESS

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
ARCH = {"x86_64": "x86", "AMD64": "x86", "aarch64": "arm", "arm64": "arm"}.get(platform.machine())


def _compiler():
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    return cc if shutil.which(cc[0]) else (["gcc"] if shutil.which("gcc") else None)


def _link(sources, tmp_path):
    """Compile each (baseline) source at -O0 (only symbols matter) and link them into a shared
    object with --no-undefined; returns the CompletedProcess of the link."""
    cc = _compiler()
    objects = []
    for i, src in enumerate(sources):
        obj = tmp_path / f"{i}.o"
        done = subprocess.run(cc + ["-O0", "-std=c99", "-fPIC", "-c", str(src), "-o", str(obj),
                                    f"-I{KERNELS / 'include'}"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        objects.append(str(obj))
    return subprocess.run(cc + ["-shared", "-Wl,--no-undefined"] + objects
                          + ["-lm", "-o", str(tmp_path / "k.so")], capture_output=True, text=True)


needs_cc = pytest.mark.skipif(ARCH is None or _compiler() is None
                              or not platform.system() == "Linux",
                              reason="needs a C compiler on Linux x86-64/aarch64")


@NO_SUBPROCESS
@needs_cc
def test_every_isa_file_is_required_at_link_time(tmp_path):
    """Link dispatch.c with the scalar kernels only: the link must fail, and name at least one
    symbol of every SIMD file of this architecture (so dropping any one file fails too)."""
    scalar = sorted((KERNELS / "scalar").glob("*.c"))
    partial = _link(scalar + [KERNELS / "dispatch.c"], tmp_path)
    assert partial.returncode != 0, "dispatch.c links without any SIMD kernel file"
    undefined = set(re.findall(r"undefined reference to [`'\u2018](im2row_\w+)", partial.stderr))
    simd = sorted((KERNELS / ARCH).glob("*.c"))
    assert simd, f"no kernels/{ARCH} sources"
    for source in simd:
        # names may be built by the shared driver's macros: any ISA-suffixed name it mentions
        defined = set(re.findall(r"(im2row_\w+__(?:avx2|avx512|neon))\b", source.read_text()))
        assert defined & undefined, (source.name, sorted(undefined))
