#!/bin/sh
# Build (and optionally run) tests/c/nhwc_kernels_check.c against the channels-last kernels
# (f32-igemm-nhwc, f32-dwconv-nhwc), with the same per-ISA flags as the library build.
#   tests/c/build_nhwc_kernels.sh            build the native (x86-64) runner
#   tests/c/build_nhwc_kernels.sh check      ... and run the checks
#   tests/c/build_nhwc_kernels.sh bench      ... and run the benchmark
#   tests/c/build_nhwc_kernels.sh neon       cross-build for aarch64 and run the checks under
#                                            qemu (needs gcc-aarch64-linux-gnu, qemu-user-static)
# Output goes to $BUILD_DIR (default build/nhwc_kernels under the repo root).
# Set CHECK_CFLAGS (e.g. "-fsanitize=address,undefined -g") to add flags to every file.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${BUILD_DIR:-$ROOT/build/nhwc_kernels}
mkdir -p "$OUT"
K=$ROOT/kernels
INC="-I$K/include"
EXTRA=${CHECK_CFLAGS:-}
CFLAGS="-O3 -std=c99 -fno-strict-aliasing -Wall -Wextra"
SCALAR="$K/scalar/f32-igemm-nhwc-scalar.c $K/scalar/f32-dwconv-nhwc-scalar.c"
MODEL="$K/cpuinfo.c $K/gemm-blocking.c"   # the k slice of igemm-nhwc comes from the caches
MODE=${1:-build}

if [ "$MODE" = neon ]; then
    CC=${CC_AARCH64:-aarch64-linux-gnu-gcc}
    $CC $CFLAGS -march=armv8-a -static $EXTRA $INC $SCALAR $MODEL $K/arm/f32-igemm-nhwc-neon.c \
        $K/arm/f32-dwconv-nhwc-neon.c "$ROOT/tests/c/nhwc_kernels_check.c" -lm -o "$OUT/nhwc_kernels_check_aarch64"
    echo "built $OUT/nhwc_kernels_check_aarch64"
    QEMU_CPU=${QEMU_CPU:-cortex-a72} qemu-aarch64-static "$OUT/nhwc_kernels_check_aarch64" ${2:-check}
    exit $?
fi

CC=${CC:-gcc}
AVX2="-mavx2 -mfma"
AVX512="-mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma"
objs=""
build() { # file flags
    o=$OUT/$(basename "$1" .c).o
    $CC $CFLAGS $2 $EXTRA $INC -c "$1" -o "$o"
    objs="$objs $o"
}
for f in $SCALAR $MODEL "$ROOT/tests/c/nhwc_kernels_check.c"; do build "$f" ""; done
build "$K/x86/f32-igemm-nhwc-avx2.c" "$AVX2"
build "$K/x86/f32-dwconv-nhwc-avx2.c" "$AVX2"
build "$K/x86/f32-igemm-nhwc-avx512.c" "$AVX512"
build "$K/x86/f32-dwconv-nhwc-avx512.c" "$AVX512"
$CC $EXTRA $objs -lm -o "$OUT/nhwc_kernels_check"
echo "built $OUT/nhwc_kernels_check"
case $MODE in
    check) exec "$OUT/nhwc_kernels_check" ;;
    bench) exec "$OUT/nhwc_kernels_check" bench ;;
esac
