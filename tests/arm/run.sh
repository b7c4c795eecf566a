#!/usr/bin/env bash
# Cross-build im2row for aarch64 on an x86-64 Debian 12 host and run its tests on an emulated
# arm64 CPU (qemu-user, cortex-a72: plain ASIMD + FMA, no SVE / FP16 / dot product).
#
#   tests/arm/run.sh [extra pytest args]
#
# Steps: host tools from apt (only what is missing) -> arm64 Debian sysroot, unpacked only
# (cached) -> aarch64 numpy/scipy/pytest wheels into that sysroot, pinned to the host's
# versions (cached) -> copy of the checkout in a temporary dir, Cython on the host, C compiled
# by aarch64-linux-gnu-gcc into an aarch64 wheel (dist: $IM2ROW_ARM_WHEEL_DIR if set) -> the
# wheel installed by the host's pip for the aarch64 target, the copy's own im2row sources
# removed, so only the installed wheel can be imported -> standalone C kernel checkers
# (tests/c) under qemu -> .ci/smoke.py and pytest under qemu, sharded over the CPUs.
# Exit status 0 only if everything passed and the build
# offers 'neon'.  See tests/arm/README.md for the variables and what is covered.
set -Eeuo pipefail

T0=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE=${IM2ROW_ARM_CACHE:-$HOME/.cache/im2row-arm}
SUITE=bookworm                      # Debian release of the sysroot: its Python is 3.11
PYVER=3.11
CPU_MODEL=${IM2ROW_ARM_QEMU_CPU:-cortex-a72}
JOBS=${IM2ROW_ARM_JOBS:-$(nproc 2>/dev/null || echo 2)}
SHARD_TIMEOUT=${IM2ROW_ARM_TIMEOUT:-1800}   # seconds per pytest shard / C checker
SELECT=${IM2ROW_ARM_SELECT-}                 # pytest -m expression (empty: every marker)
# The `slow` layer suite costs ~28 emulated minutes in full (the float64 reference of the big
# VGG layers dominates): by default keep the cheap models whole and a spread of ResNet-50/VGG
# layers (7x7 s2 stem, 1x1, 1x1 s2, 3x3 s1/s2, small-spatial 3x3).  IM2ROW_ARM_FULL=1: all.
DEFAULT_SLOW_FILTER='\[(mobilenet_v2|shufflenet)\.|\[resnet50\.(0|1|2|6|8|22)-|\[vgg19\.0-'
SLOW_FILTER=${IM2ROW_ARM_SLOW_FILTER-$DEFAULT_SLOW_FILTER}
if [ "${IM2ROW_ARM_FULL:-0}" = 1 ]; then SELECT=""; SLOW_FILTER=""; fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"

log() { printf '[arm %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { log "ERROR: $*"; log "total time $(( $(date +%s) - T0 )) s"; exit 2; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

WORK=$(mktemp -d "${TMPDIR:-/tmp}/im2row-arm.XXXXXX")
cleanup() { [ "${IM2ROW_ARM_KEEP:-0}" = 1 ] && log "kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$CACHE"

# ---------------------------------------------------------------- 1. host tools (apt)
APT_PKGS=(qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross mmdebstrap arch-test make)
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "apt: installing ${missing[*]}"
    apt_get() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$@"; }
    apt_get update -qq </dev/null || { sleep 5; apt_get update -qq </dev/null; }
    apt_get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
for t in qemu-aarch64-static aarch64-linux-gnu-gcc mmdebstrap make; do
    command -v "$t" >/dev/null || die "$t not found after installing ${APT_PKGS[*]}"
done
log "host tools ok ($(aarch64-linux-gnu-gcc -dumpfullversion), $(qemu-aarch64-static --version | head -1))"

# ---------------------------------------------------------------- 2. host Python (build side)
host_ok() { "$1" - <<'EOF' 2>/dev/null
import sys
assert sys.version_info[:2] == (3, 11)
import Cython, numpy, scipy, setuptools
assert int(Cython.__version__.split(".")[0]) >= 3
EOF
}
HOST_PY=""
for c in ${IM2ROW_ARM_HOST_PYTHON:-} python3.11 python3 "$CACHE/host-venv/bin/python"; do
    if command -v "$c" >/dev/null 2>&1 && host_ok "$c"; then HOST_PY=$(command -v "$c"); break; fi
done
if [ -z "$HOST_PY" ]; then
    base=""
    for c in python3.11 python3; do
        command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2]==(3,11)' \
            2>/dev/null && { base=$(command -v "$c"); break; }
    done
    if [ -z "$base" ] || ! "$base" -c 'import venv, ensurepip' 2>/dev/null; then
        log "apt: installing python3 python3-venv"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq </dev/null
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
            --no-install-recommends python3 python3-venv python3-pip </dev/null >/dev/null
        [ -n "$base" ] || base=$(command -v python3.11)
    fi
    log "host venv: $CACHE/host-venv (cython numpy scipy setuptools)"
    rm -rf "$CACHE/host-venv"
    "$base" -m venv --system-site-packages "$CACHE/host-venv"
    "$CACHE/host-venv/bin/python" -m pip install -q --disable-pip-version-check \
        "cython>=3" numpy scipy setuptools </dev/null
    HOST_PY=$CACHE/host-venv/bin/python
    host_ok "$HOST_PY" || die "host Python 3.11 with cython/numpy/scipy could not be set up"
fi
# The aarch64 wheels are pinned to what the host builds against (and runs its tests with).
read -r NP_VER SP_VER <<<"$("$HOST_PY" -c 'import numpy, scipy; print(numpy.__version__, scipy.__version__)')"
host_ver() { "$HOST_PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }
TEST_PKGS=()
for p in pytest hypothesis threadpoolctl filelock tqdm; do
    v=$(host_ver "$p"); TEST_PKGS+=("$p${v:+==$v}")
done
log "host python $HOST_PY: numpy $NP_VER, scipy $SP_VER"

# ---------------------------------------------------------------- 3. arm64 sysroot (cached)
SYSROOT=$CACHE/sysroot-$SUITE-arm64
SYSROOT_PKGS="python3,python3-dev,libc6-dev,libstdc++6,libgomp1"
SYSROOT_KEY="$SUITE arm64 extract $SYSROOT_PKGS v1"
sysroot_complete() { # dir
    [ "$(cat "$1/.im2row-complete" 2>/dev/null)" = "$SYSROOT_KEY" ] || return 1
    local f
    for f in usr/bin/python$PYVER usr/lib/python$PYVER/os.py usr/include/python$PYVER/Python.h \
             usr/include/aarch64-linux-gnu/python$PYVER/pyconfig.h lib/ld-linux-aarch64.so.1 \
             lib/aarch64-linux-gnu/libc.so.6 usr/lib/aarch64-linux-gnu/libstdc++.so.6 \
             usr/lib/aarch64-linux-gnu/libc_nonshared.a usr/lib/aarch64-linux-gnu/libgomp.so.1; do
        [ -e "$1/$f" ] || [ -e "$1/usr/$f" ] || { log "sysroot incomplete: missing $f"; return 1; }
    done
    [ ! -e "$1/usr/include/python$PYVER/numpy" ] || { log "sysroot has Debian's numpy headers"; return 1; }
}
if sysroot_complete "$SYSROOT"; then
    log "sysroot: reusing $SYSROOT"
else
    mirror=${IM2ROW_ARM_MIRROR:-}
    if [ -z "$mirror" ]; then
        mirror=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
                    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                        | awk '{for(i=2;i<=NF;i++) if ($i ~ /:\/\//) {print $i; break}}'; } \
                  | grep -i debian | grep -vi security | head -1 || true)
        mirror=${mirror:-http://deb.debian.org/debian}
    fi
    log "sysroot: mmdebstrap $SUITE arm64 ($SYSROOT_PKGS) from $mirror"
    rm -rf "$SYSROOT" "$SYSROOT.tmp"
    $SUDO mmdebstrap --quiet --mode=root --arch=arm64 --variant=extract --include="$SYSROOT_PKGS" \
        "$SUITE" "$SYSROOT.tmp" "$mirror" </dev/null
    [ -z "$SUDO" ] || $SUDO chown -R "$(id -u):$(id -g)" "$SYSROOT.tmp"
    # Debian's python3-numpy must not be there (its headers shadow the wheel's); be sure.
    rm -rf "$SYSROOT.tmp/usr/include/python$PYVER/numpy"
    echo "$SYSROOT_KEY" > "$SYSROOT.tmp/.im2row-complete"
    sysroot_complete "$SYSROOT.tmp" || die "sysroot incomplete after mmdebstrap"
    mv "$SYSROOT.tmp" "$SYSROOT"
    log "sysroot: done ($(du -sh "$SYSROOT" | cut -f1))"
fi

# ---------------------------------------------------------------- 4. aarch64 wheels (cached)
SITE_KEY="cp311 numpy==$NP_VER scipy==$SP_VER ${TEST_PKGS[*]}"
SITE=$CACHE/site-$(printf '%s' "$SITE_KEY" | sha256sum | cut -c1-12)
if [ "$(cat "$SITE/.im2row-complete" 2>/dev/null)" = "$SITE_KEY" ] && [ -f "$SITE/numpy/__init__.py" ] \
        && [ -f "$SITE/scipy/__init__.py" ] && [ -f "$SITE/pytest/__init__.py" ]; then
    log "wheels: reusing $SITE"
else
    log "wheels: $SITE_KEY"
    rm -rf "$SITE" "$SITE.tmp"
    "$HOST_PY" -m pip install -q --disable-pip-version-check --no-warn-script-location \
        --only-binary=:all: --implementation cp --python-version $PYVER --abi cp311 \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
        --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
        --target "$SITE.tmp" "numpy==$NP_VER" "scipy==$SP_VER" "${TEST_PKGS[@]}" </dev/null \
        >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; die "pip could not install the aarch64 wheels"; }
    echo "$SITE_KEY" > "$SITE.tmp/.im2row-complete"
    mv "$SITE.tmp" "$SITE"
    # keep only the current wheel set in the cache
    find "$CACHE" -maxdepth 1 -name 'site-*' ! -path "$SITE" -exec rm -rf {} + || true
fi

# Run the arm64 interpreter: clean environment, no binfmt_misc needed.
QENV=(env -i PATH=/usr/bin:/bin HOME="$WORK/home" LANG=C.UTF-8 TMPDIR="$WORK/tmp"
      QEMU_LD_PREFIX="$SYSROOT" QEMU_CPU="$CPU_MODEL" PYTHONPATH="$SITE:$WORK/site-im2row:$WORK/src/tests/arm"
      PYTHONDONTWRITEBYTECODE=1 IM2ROW_NO_SUBPROCESS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
      IM2ROW_ARM_SLOW_FILTER="$SLOW_FILTER"
      ${IM2ROW_ARM_HYPOTHESIS_EXAMPLES:+IM2ROW_ARM_HYPOTHESIS_EXAMPLES=$IM2ROW_ARM_HYPOTHESIS_EXAMPLES})
APY=(qemu-aarch64-static "$SYSROOT/usr/bin/python$PYVER")
mkdir -p "$WORK/home" "$WORK/tmp"

# ---------------------------------------------------------------- 5. cross-build (temp copy)
SRC=$WORK/src
mkdir -p "$SRC"
tar -C "$REPO" -cf - --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.so' \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
    --exclude=./tests/c/bin --exclude=./kernels/_core.c --exclude=./tmp . | tar -C "$SRC" -xf -
NEON_SRCS=$(cd "$SRC/kernels/arm" 2>/dev/null && ls -- *.c 2>/dev/null | tr '\n' ' ' || true)
log "build: aarch64 wheel from $SRC (NEON sources: ${NEON_SRCS:-none})"
CROSS="aarch64-linux-gnu-gcc --sysroot=$SYSROOT"
( cd "$SRC" && CC="$CROSS" LDSHARED="$CROSS -shared" LDFLAGS="" CFLAGS="" CPPFLAGS="" \
    _PYTHON_HOST_PLATFORM=linux-aarch64 SETUPTOOLS_EXT_SUFFIX=.cpython-311-aarch64-linux-gnu.so \
    "$HOST_PY" setup.py -q build --build-base "$WORK/build" \
        build_ext -I "$SYSROOT/usr/include/python$PYVER" \
        -I "$SYSROOT/usr/include/aarch64-linux-gnu/python$PYVER" \
        bdist_wheel --plat-name linux_aarch64 --bdist-dir "$WORK/bdist" --dist-dir "$WORK/dist" ) \
    >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; die "aarch64 build failed"; }
WHEEL=$(ls "$WORK"/dist/im2row-*-linux_aarch64.whl 2>/dev/null || true)
[ -n "$WHEEL" ] || { cat "$WORK/build.log"; die "no aarch64 wheel built"; }
SO_IN_WHEEL=$("$HOST_PY" -c 'import sys, zipfile; print(*[n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith(".so")])' "$WHEEL")
[ -n "$SO_IN_WHEEL" ] || die "$(basename "$WHEEL") holds no extension module"
grep -iE "warning:|without OpenMP" "$WORK/build.log" | head -20 || true
# Install it as pip installs it on an aarch64 machine (tags checked, metadata, entry points);
# the host's pip does the unpacking, the emulated Python never runs pip.
"$HOST_PY" -m pip install -q --disable-pip-version-check --no-deps --no-compile \
    --only-binary=:all: --implementation cp --python-version $PYVER --abi cp311 \
    --platform linux_aarch64 --target "$WORK/site-im2row" "$WHEEL" </dev/null \
    >"$WORK/pip-wheel.log" 2>&1 || { cat "$WORK/pip-wheel.log"; die "the aarch64 wheel does not install"; }
SO=$(ls "$WORK"/site-im2row/im2row/_core*.so 2>/dev/null || true)
[ -n "$SO" ] || die "the installed wheel has no im2row/_core*.so"
file_arch=$(od -An -tx1 -j18 -N2 "$SO" | tr -d ' ')
[ "$file_arch" = "b700" ] || die "$SO is not an aarch64 ELF (e_machine $file_arch)"
if [ -n "${IM2ROW_ARM_WHEEL_DIR:-}" ]; then mkdir -p "$IM2ROW_ARM_WHEEL_DIR"; cp "$WHEEL" "$IM2ROW_ARM_WHEEL_DIR/"; fi
# The tests must exercise the wheel, not the copy's sources (conftest imports im2row).
rm -rf "$SRC/im2row" "$SRC/tuner" "$SRC"/*.egg-info
log "build: $(basename "$WHEEL") ok, installed in $WORK/site-im2row"

STATUS=0
FAILS=()

# ---------------------------------------------------------------- 6. standalone C checkers
run_c() { # name, command...
    local name=$1; shift
    log "C checker: $name"
    if timeout "$SHARD_TIMEOUT" "$@" >"$WORK/c-$name.log" 2>&1; then
        tail -3 "$WORK/c-$name.log"; log "C checker: $name passed"
    else
        cat "$WORK/c-$name.log"; log "C checker: $name FAILED"; STATUS=1; FAILS+=("C:$name")
    fi
}
if [ "${IM2ROW_ARM_SKIP_C:-0}" != 1 ]; then
    if [ -f "$SRC/tests/c/Makefile" ] && [ -f "$SRC/tests/c/gemm_packed_runner.c" ] \
            && [ -f "$SRC/kernels/arm/f32-gemm-packed-neon.c" ]; then
        run_c gemm_packed make -s -C "$SRC/tests/c" check-aarch64 BUILD="$WORK/c-build" \
            CROSS_CC=aarch64-linux-gnu-gcc QEMU="env QEMU_CPU=$CPU_MODEL qemu-aarch64-static"
    else
        log "C checker: gemm_packed not run (needs tests/c/Makefile and kernels/arm/f32-gemm-packed-neon.c)"
    fi
    if [ -f "$SRC/tests/c/build_data_kernels.sh" ] && [ -f "$SRC/tests/c/data_kernels_check.c" ] \
            && [ -f "$SRC/kernels/arm/f32-gather-neon.c" ] && [ -f "$SRC/kernels/arm/f32-scatter-bias-neon.c" ] \
            && [ -f "$SRC/kernels/arm/f32-dwconv-neon.c" ]; then
        run_c data_kernels env BUILD_DIR="$WORK/c-build/data" CC_AARCH64=aarch64-linux-gnu-gcc \
            QEMU_CPU="$CPU_MODEL" sh "$SRC/tests/c/build_data_kernels.sh" neon
    else
        log "C checker: data_kernels not run (needs tests/c/build_data_kernels.sh and the gather/scatter-bias/dwconv NEON files)"
    fi
fi

# ---------------------------------------------------------------- 7. the emulated import check
( cd "$WORK" && "${QENV[@]}" IM2ROW_ISA=neon "${APY[@]}" -c '
import platform, sys, im2row, numpy, scipy
print("python", platform.python_version(), platform.machine(), "| numpy", numpy.__version__,
      "| scipy", scipy.__version__)
print("im2row", im2row.__version__, "from", im2row.__file__)
print("available_isas", im2row.available_isas(), "| active", im2row.get_isa())
print("cpu_features", im2row.cpu_features())
assert "/site-im2row/" in im2row.__file__, "im2row was not imported from the installed wheel"
' && "${QENV[@]}" IM2ROW_ISA=neon IM2ROW_PLAN_CACHE=off "${APY[@]}" "$SRC/.ci/smoke.py" "$WORK/site-im2row" ) \
    >"$WORK/isas.log" 2>&1 || { cat "$WORK/isas.log"; die "the installed aarch64 wheel does not import or fails its smoke test"; }
sed 's/^/    /' "$WORK/isas.log"
if grep -q "^available_isas.*'neon'" "$WORK/isas.log"; then
    log "neon kernels present"
else
    log "FAIL: 'neon' is not in im2row.available_isas() on aarch64 (kernels/arm/ has: ${NEON_SRCS:-nothing})"
    STATUS=1; FAILS+=("no-neon")
fi

# ---------------------------------------------------------------- 8. pytest, sharded
PYTEST_ARGS=(-q -p no:cacheprovider -p arm_shard -rfEs --durations=15 --junitxml=JUNIT)
[ -n "$SELECT" ] && PYTEST_ARGS+=(-m "$SELECT")
# shellcheck disable=SC2206
[ -n "${IM2ROW_ARM_PYTEST_ARGS:-}" ] && PYTEST_ARGS+=(${IM2ROW_ARM_PYTEST_ARGS})
PYTEST_ARGS+=("$@")
[ $# -gt 0 ] || PYTEST_ARGS+=(tests)
log "pytest: $JOBS shard(s), QEMU_CPU=$CPU_MODEL IM2ROW_ISA=neon IM2ROW_NO_SUBPROCESS=1 ${SELECT:+-m '$SELECT' }${SLOW_FILTER:+slow tests matching /$SLOW_FILTER/}"
pids=()
for ((k = 0; k < JOBS; k++)); do
    args=("${PYTEST_ARGS[@]/JUNIT/$WORK/junit-$k.xml}")
    ( cd "$SRC" && exec timeout "$SHARD_TIMEOUT" "${QENV[@]}" IM2ROW_ISA=neon IM2ROW_ARM_SHARD="$k/$JOBS" \
        "${APY[@]}" -m pytest "${args[@]}" ) >"$WORK/pytest-$k.log" 2>&1 &
    pids+=($!)
done
for ((k = 0; k < JOBS; k++)); do
    rc=0; wait "${pids[$k]}" || rc=$?
    echo "----- pytest shard $k/$JOBS (exit $rc) -----"
    cat "$WORK/pytest-$k.log"
    case $rc in
        0) ;;
        5) ;;  # this shard collected nothing; the totals below decide
        124) log "pytest shard $k TIMED OUT after $SHARD_TIMEOUT s"; STATUS=1; FAILS+=("timeout:$k") ;;
        *) STATUS=1; FAILS+=("pytest:$k") ;;
    esac
    [ -f "$WORK/junit-$k.xml" ] || { STATUS=1; FAILS+=("no-report:$k"); }
done
read -r N_TESTS N_FAIL N_ERR N_SKIP <<<"$("$HOST_PY" - "$WORK"/junit-*.xml <<'EOF' 2>/dev/null || echo "0 0 0 0"
import sys, xml.etree.ElementTree as ET
t = f = e = s = 0
for path in sys.argv[1:]:
    for suite in ET.parse(path).getroot().iter("testsuite"):
        t += int(suite.get("tests", 0)); f += int(suite.get("failures", 0))
        e += int(suite.get("errors", 0)); s += int(suite.get("skipped", 0))
print(t, f, e, s)
EOF
)"
N_PASS=$(( N_TESTS - N_FAIL - N_ERR - N_SKIP ))
if [ "$N_TESTS" -eq 0 ]; then log "pytest ran no test"; STATUS=1; FAILS+=("no-tests"); fi

echo
echo "===== ARM (aarch64, qemu $CPU_MODEL) summary ====="
echo "isas:    $(grep '^available_isas' "$WORK/isas.log" | cut -d' ' -f2- )"
echo "shards:  $(grep -h -E '^(=+ )?[0-9]+ (passed|failed|error|skipped).* in [0-9.]+s' "$WORK"/pytest-*.log | tr '\n' ';' )"
echo "arm: $N_PASS passed, $((N_FAIL + N_ERR)) failed, $N_SKIP skipped"
T=$(( $(date +%s) - T0 ))
if [ "$STATUS" -eq 0 ]; then
    log "ARM tests PASSED, total time ${T} s"
else
    log "ARM tests FAILED (${FAILS[*]}), total time ${T} s"
fi
exit "$STATUS"
