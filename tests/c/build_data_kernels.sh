#!/bin/sh
# Build (and optionally run) tests/c/data_kernels_check.c against the gather, scatter-bias,
# transpose, dwconv and dwconv-s2 kernels, with the same per-ISA flags as the library build.
#   tests/c/build_data_kernels.sh            build the native (x86-64) runner
#   tests/c/build_data_kernels.sh check      ... and run the checks
#   tests/c/build_data_kernels.sh bench      ... and run the benchmark
#   tests/c/build_data_kernels.sh neon       cross-build for aarch64 and run the checks under
#                                            qemu (needs gcc-aarch64-linux-gnu, qemu-user-static)
# Output goes to $BUILD_DIR (default build/data_kernels under the repo root).
# Set CHECK_CFLAGS (e.g. "-fsanitize=address,undefined -g") to add flags to every file.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${BUILD_DIR:-$ROOT/build/data_kernels}
mkdir -p "$OUT"
K=$ROOT/kernels
INC="-I$K/include"
EXTRA=${CHECK_CFLAGS:-}
SCALAR="$K/scalar/f32-gather-scalar.c $K/scalar/f32-scatter-bias-scalar.c $K/scalar/f32-dwconv-scalar.c \
        $K/scalar/f32-dwconv-s2-scalar.c $K/scalar/f32-transpose-scalar.c"
MODE=${1:-build}

if [ "$MODE" = neon ]; then
    CC=${CC_AARCH64:-aarch64-linux-gnu-gcc}
    objs=""
    for f in $SCALAR $K/arm/f32-gather-neon.c $K/arm/f32-scatter-bias-neon.c $K/arm/f32-dwconv-neon.c \
             $K/arm/f32-dwconv-s2-neon.c $K/arm/f32-transpose-neon.c "$ROOT/tests/c/data_kernels_check.c"; do
        o=$OUT/$(basename "$f" .c).a64.o
        $CC -O3 -std=c99 -fno-strict-aliasing -Wall -Wextra -Wno-comment $EXTRA $INC -c "$f" -o "$o"
        objs="$objs $o"
    done
    $CC -O2 -static $EXTRA $objs -lm -o "$OUT/data_kernels_check_aarch64"
    echo "built $OUT/data_kernels_check_aarch64"
    QEMU_CPU=${QEMU_CPU:-cortex-a72} qemu-aarch64-static "$OUT/data_kernels_check_aarch64" ${2:-check}
    exit $?
fi

CC=${CC:-gcc}
AVX2="-mavx2 -mfma"
AVX512="-mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma"
objs=""
build() { # file flags
    o=$OUT/$(basename "$1" .c).o
    $CC -O3 -std=c99 -fno-strict-aliasing -Wall -Wextra -Wno-comment $2 $EXTRA $INC -c "$1" -o "$o"
    objs="$objs $o"
}
for f in $SCALAR; do build "$f" ""; done
build "$K/x86/f32-gather-avx2.c" "$AVX2"
build "$K/x86/f32-scatter-bias-avx2.c" "$AVX2"
build "$K/x86/f32-dwconv-avx2.c" "$AVX2"
build "$K/x86/f32-transpose-avx2.c" "$AVX2"
build "$K/x86/f32-dwconv-avx512.c" "$AVX512"
build "$K/x86/f32-dwconv-s2-avx2.c" "$AVX2"
build "$K/x86/f32-dwconv-s2-avx512.c" "$AVX512"
DEFS=""
for f in f32-gather-avx512 f32-scatter-bias-avx512; do
    if [ -f "$K/x86/$f.c" ]; then
        build "$K/x86/$f.c" "$AVX512"
        case $f in
            f32-gather-avx512) DEFS="$DEFS -DIM2ROW_HAVE_GATHER_AVX512" ;;
            *) DEFS="$DEFS -DIM2ROW_HAVE_SCATTER_AVX512" ;;
        esac
    fi
done
$CC -O2 -std=c99 -Wall -Wextra -Wno-comment $DEFS $EXTRA $INC -c "$ROOT/tests/c/data_kernels_check.c" \
    -o "$OUT/data_kernels_check.o"
$CC $EXTRA $objs "$OUT/data_kernels_check.o" -lm -o "$OUT/data_kernels_check"
echo "built $OUT/data_kernels_check"
case $MODE in
    check) exec "$OUT/data_kernels_check" ;;
    bench) shift; exec "$OUT/data_kernels_check" bench "$@" ;;
esac
