#!/usr/bin/env bash
# The release round trip: `python -m build` makes the sdist and then the wheel FROM that sdist
# (so a file missing from the sdist fails the build), the sdist holds every architecture's
# kernels, and the wheel installs into a fresh venv and passes .ci/smoke.py there, run from
# outside the checkout so that nothing but the installed wheel can be imported.
#   .ci/check-dist.sh [python]       (default: python; needs pip access for `build`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python}
start=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/im2row-dist.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$PY" -m pip install -q --disable-pip-version-check build
echo "[dist] python -m build (sdist, then a wheel from the sdist)"
"$PY" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
if grep -q "WITHOUT OpenMP" "$WORK/build.log"; then grep -A2 "WITHOUT OpenMP" "$WORK/build.log"; fi
SDIST=$(ls "$WORK"/dist/im2row-*.tar.gz)
WHEEL=$(ls "$WORK"/dist/im2row-*.whl)
echo "[dist] $(basename "$SDIST"), $(basename "$WHEEL")"

# every kernel source of every architecture is in the sdist (a published sdist builds anywhere)
tar -tzf "$SDIST" | sed 's|^[^/]*/||' | sort >"$WORK/sdist.txt"
missing=$(git ls-files kernels | sort | comm -23 - "$WORK/sdist.txt")
[ -z "$missing" ] || { echo "[dist] missing from the sdist:"; echo "$missing"; exit 1; }

echo "[dist] install the wheel into a fresh venv and smoke-test it"
"$PY" -m venv --system-site-packages "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL"
mkdir "$WORK/run"
cp .ci/smoke.py "$WORK/run/"
( cd "$WORK/run" && env -u PYTHONPATH IM2ROW_PLAN_CACHE="$WORK/run/plans.json" \
    "$WORK/venv/bin/python" smoke.py "$WORK/venv" )
echo "[dist] ok in $((SECONDS - start)) s"
