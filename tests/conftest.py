"""Shared fixtures: a seeded rng per test, an ISA fixture over every kernel set this machine
runs, and the comparison against the float64 reference (tests/reference.py)."""
from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import im2row  # noqa: E402
from im2row import wisdom  # noqa: E402
from reference import conv2d_reference  # noqa: E402

# Workspaces are reused and never zeroed: fill them with NaN before every call so that a kernel
# reading scratch it did not write gives a wrong (NaN) result the comparisons catch.
im2row._core.set_workspace_poison(True)

ISAS = im2row.available_isas()

# Per-element tolerance: |y - ref| <= RTOL * ref_abs + ATOL, where ref_abs is the same
# convolution of |x| and |w| (plus |b|), i.e. the sum of the magnitudes of the terms.  Any order
# of float32 summation stays within (K-1) * eps * ref_abs and in practice within ~eps * ref_abs;
# one wrong, missing or extra tap moves the result by a whole term (~1e-1 here), orders of
# magnitude above this bound for every shape in the suite.
RTOL = {np.dtype(np.float32): 32 * float(np.finfo(np.float32).eps)}
ATOL = {np.dtype(np.float32): 1e-6}


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: reproducible, different per case."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(autouse=True)
def _restore_isa():
    """Tests may switch the active ISA; put it back whatever happens."""
    before = im2row.get_isa()
    yield
    im2row.set_isa(before)


@pytest.fixture
def no_tuned_plans(monkeypatch):
    """Default plans only: a tuned-plan cache on the developer's machine
    (~/.cache/im2row/plans.json) must not change which plans these tests see."""
    from im2row import wisdom

    monkeypatch.setenv("IM2ROW_PLAN_CACHE", "off")
    wisdom.store().reset()
    yield
    monkeypatch.undo()
    wisdom.store().reset()


@pytest.fixture(params=ISAS)
def isa(request):
    """Each available kernel ISA in turn, made the active one for the test."""
    im2row.set_isa(request.param)
    assert im2row.get_isa() == request.param
    return request.param


def uniform(rng, shape, dtype=np.float32):
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def make_operands(rng, x_shape, weight_shape, bias=True):
    """float32 input, weight and (optionally) bias with entries in [-1, 1)."""
    x = uniform(rng, x_shape)
    w = uniform(rng, weight_shape)
    b = uniform(rng, (weight_shape[0],)) if bias else None
    return x, w, b


def reference_pair(x, w, b=None, **conv):
    """(reference result, reference of magnitudes) in float64."""
    ref = conv2d_reference(x, w, b, **conv)
    mag = conv2d_reference(np.abs(np.asarray(x, np.float64)), np.abs(np.asarray(w, np.float64)),
                           None if b is None else np.abs(np.asarray(b, np.float64)), **conv)
    return ref, mag


def assert_matches_reference(y, x, w, b=None, *, expected=None, **conv):
    """y must be im2row's float32 result of conv2d(x, w, b, **conv) (conv: stride, padding,
    dilation, groups, layout).  `expected` = reference_pair(...) when already computed."""
    ref, mag = expected if expected is not None else reference_pair(x, w, b, **conv)
    assert isinstance(y, np.ndarray), type(y)
    assert y.dtype == np.float32, y.dtype
    assert y.shape == ref.shape, f"shape {y.shape}, expected {ref.shape}"
    if y.size == 0:
        return
    dtype = np.dtype(np.float32)
    err = np.abs(y.astype(np.float64) - ref)
    bound = RTOL[dtype] * mag + ATOL[dtype]
    bad = ~(err <= bound)  # NaN counts as bad
    if bad.any():
        idx = np.unravel_index(int(np.argmax(np.where(bad, err / bound, -1.0))), y.shape)
        raise AssertionError(
            f"{int(bad.sum())} of {y.size} outputs wrong; worst at {idx}: got {y[idx]!r}, "
            f"expected {ref[idx]!r} (|err| {err[idx]:.3g} > bound {bound[idx]:.3g}); "
            f"max |err| {np.nanmax(err):.3g}, max |ref| {np.abs(ref).max():.3g}")


def shape_id(value) -> str:
    """Readable parametrize ids for tuples and padding forms."""
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private plan cache path; the store starts fresh and is reset afterwards."""
    path = tmp_path / "plans.json"
    monkeypatch.setenv(wisdom.ENV_VAR, str(path))
    wisdom.store().reset()
    yield path
    wisdom.store().reset()


# Children import the same im2row as this process (a source tree or an installed copy) and run
# in a temporary folder, so that the checkout's unbuilt sources never shadow an installed build.
IM2ROW_ROOT = str(Path(im2row.__file__).resolve().parents[1])


def child_env(**extra) -> dict:
    path = os.pathsep.join(p for p in (IM2ROW_ROOT, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


NO_SUBPROCESS = pytest.mark.skipif(bool(os.environ.get("IM2ROW_NO_SUBPROCESS")),
                                   reason="IM2ROW_NO_SUBPROCESS is set")
