#!/usr/bin/env bash
# The extension built with AddressSanitizer in a scratch copy of the tracked tree, and the tests
# that drive the core's C paths hardest run on it (the hypothesis property test over plans and
# layouts, the NHWC and banded paths).  A stray write that corrupts the heap without crashing,
# as the banded transposes' once did, is a report here and fails CI.
#   bash .ci/asan-extension.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python}
tree=$PWD/build/asan-tree
rm -rf "$tree"
mkdir -p "$tree"
git ls-files -z | xargs -0 cp --parents -t "$tree"
(cd "$tree" && CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" LDFLAGS="-fsanitize=address" \
  "$py" setup.py -q build_ext --inplace >build.log 2>&1) || { tail -30 "$tree/build.log"; exit 1; }
asan_lib=$(gcc -print-file-name=libasan.so)
cd "$tree"
export PYTHONPATH="$tree" LD_PRELOAD="$asan_lib"
# leaks: the interpreter's own are not ours; any error report aborts the process
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
"$py" -c "import sys, im2row; sys.exit(0 if im2row.__file__.startswith('$tree/') else
           'ASan run would test ' + im2row.__file__ + ', not the sanitized build')"
"$py" -m pytest -q -p no:cacheprovider tests/test_properties.py tests/test_nhwc.py tests/test_algorithms.py
