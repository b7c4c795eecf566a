"""Build of the im2row extension: one Cython core (kernels/_core.pyx) linked with the C kernels.

Each SIMD source is compiled with its own ISA flags (an AVX2 file with -mavx2 -mfma, ...) so that
the rest of the extension stays baseline and runs on any CPU of the architecture; the dispatch
table in kernels/dispatch.c picks a variant at run time."""
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
KERNELS = Path("kernels")

ISA_FLAGS = {
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma"],
    "neon": [],
}
# incompatible pointer types: a kernel declared with the wrong signature in dispatch.c is a
# build error, not a warning in a log nobody reads
BASE_FLAGS = ["-O3", "-std=c99", "-fno-strict-aliasing", "-Werror=incompatible-pointer-types"]


def target_arch():
    # sysconfig honours _PYTHON_HOST_PLATFORM, which is how cross builds (aarch64) say so.
    plat = os.environ.get("_PYTHON_HOST_PLATFORM") or sysconfig.get_platform()
    if "aarch64" in plat or "arm64" in plat:
        return "arm64"
    if "x86_64" in plat or "amd64" in plat.lower():
        return "x86_64"
    return "other"


def kernel_sources():
    """Scalar sources always; SIMD sources for the target architecture, tagged by ISA."""
    sources = [(str(p), None) for p in sorted((KERNELS / "scalar").glob("*.c"))]
    # dispatch, cache detection and the GEMM blocking model: baseline code for every target
    sources += [(str(KERNELS / name), None) for name in ("dispatch.c", "cpuinfo.c", "gemm-blocking.c")]
    arch = target_arch()
    if arch == "x86_64":
        for p in sorted((KERNELS / "x86").glob("*.c")):
            isa = "avx512" if p.stem.endswith("-avx512") else "avx2"
            sources.append((str(p), isa))
    elif arch == "arm64":
        sources += [(str(p), "neon") for p in sorted((KERNELS / "arm").glob("*.c"))]
    return sources


def openmp_flags(compiler_cmd):
    """(flags, why not): -fopenmp if the compiler, run as the build runs it (the whole command:
    CC="ccache gcc", a cross compiler with --sysroot and its flags), compiles and links an
    OpenMP program; else [] and the reason.

    IM2ROW_NO_OPENMP=1 forces the serial build (the core's prange loops then run in order)."""
    if os.environ.get("IM2ROW_NO_OPENMP"):
        return [], "IM2ROW_NO_OPENMP is set"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        command = list(compiler_cmd) + ["-fopenmp", str(src), "-o", str(Path(tmp) / "probe")]
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        except OSError as exc:
            return [], f"cannot run {command[0]!r} ({exc})"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return [], f"'{' '.join(compiler_cmd)} -fopenmp' failed: {last}"
        return ["-fopenmp"], None


def say_loudly(text):
    bar = "!" * 78
    print(f"\n{bar}\n{text}\n{bar}\n", file=sys.stderr, flush=True)


class BuildWithIsaFlags(build_ext):
    """Compiles the C kernels first, each with its ISA's flags, then links them into the
    Cython extension as extra objects."""

    def build_extension(self, ext):
        objects = []
        for source, isa in kernel_sources():
            flags = BASE_FLAGS + ISA_FLAGS.get(isa, []) if isa else BASE_FLAGS
            objects += self.compiler.compile(
                [source], output_dir=self.build_temp, include_dirs=[str(KERNELS / "include")],
                extra_postargs=flags, depends=header_files())
        self.check_kernels_link(objects)
        ext.extra_objects = list(ext.extra_objects or []) + objects
        omp, why_not = openmp_flags(self.compiler.compiler_so)
        if not omp:
            say_loudly(f"im2row: building WITHOUT OpenMP ({why_not}):\n"
                       f"conv2d will run on ONE thread whatever threads= says.  Install an "
                       f"OpenMP runtime (gcc: libgomp) or fix CC, then rebuild.")
        ext.extra_compile_args = list(ext.extra_compile_args or []) + omp
        ext.extra_link_args = list(ext.extra_link_args or []) + omp
        super().build_extension(ext)

    def check_kernels_link(self, objects):
        """Link the kernels alone with --no-undefined: a kernel the dispatch table names but no
        compiled file defines (a missing ISA file) is a link error here, not a silently
        missing ISA or an import error later.  (The extension itself cannot be linked so:
        it leaves the Python C API to the interpreter.)"""
        if not sys.platform.startswith("linux"):
            return
        probe = os.path.join(self.build_temp, "im2row-kernels-link-check.so")
        self.compiler.link_shared_object(objects, probe, libraries=["m"],
                                         extra_postargs=["-Wl,--no-undefined"])


def header_files():
    return [str(p) for p in sorted((KERNELS / "include").iterdir()) if p.is_file()]


def all_kernel_files():
    """Every C source of every architecture (an sdist must build on any of them)."""
    return [str(p) for folder in ("scalar", "x86", "arm")
            for p in sorted((KERNELS / folder).glob("*.c"))] + [
                str(KERNELS / name) for name in ("dispatch.c", "cpuinfo.c", "gemm-blocking.c")]


extension = Extension(
    "im2row._core",
    sources=[str(KERNELS / "_core.pyx")],
    include_dirs=[str(KERNELS / "include"), numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=["-O3"],
    depends=all_kernel_files() + header_files(),
)

setup(
    ext_modules=cythonize([extension], language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True, "initializedcheck": False}),
    cmdclass={"build_ext": BuildWithIsaFlags},
)
