#!/usr/bin/env bash
# In-place development build (im2row/_core*.so next to the sources), serialised with a lock so
# several people building in one checkout do not clobber each other's objects.
set -euo pipefail
cd "$(dirname "$0")/.."
exec flock /tmp/im2row-build.lock python setup.py -q build_ext --inplace "$@"
