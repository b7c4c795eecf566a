"""Smoke test of an installed im2row (run by .ci/check-dist.sh and tests/arm/run.sh from outside
the checkout): it is the installed copy that imports, its compiled core and data files are
there, and conv2d agrees with a direct float64 convolution on every ISA it offers.

    python smoke.py [PREFIX]     # PREFIX: where im2row must have been imported from"""
import contextlib
import importlib.util
import io
import os
import sys

import numpy as np

import im2row
from im2row.layers import builtin_models


def direct(x, w, b, stride, pad, groups):
    """float64 direct convolution, written out (no im2row code involved)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    y = np.zeros((n, oc, oh, ow))
    per = oc // groups
    for o in range(oc):
        g = o // per
        for i in range(oh):
            for j in range(ow):
                win = x[:, g * cg:(g + 1) * cg, i * stride:i * stride + kh, j * stride:j * stride + kw]
                y[:, o, i, j] = (win * w[o]).sum(axis=(1, 2, 3)) + b[o]
    return y


def main():
    prefix = os.path.realpath(sys.argv[1]) if len(sys.argv) > 1 else None
    where = os.path.realpath(im2row.__file__)
    print("im2row", im2row.__version__, "from", where)
    if prefix and not where.startswith(prefix + os.sep):
        sys.exit(f"smoke: im2row was imported from {where}, not from {prefix}")
    assert importlib.util.find_spec("im2row.tuner") is not None, "im2row.tuner not installed"
    assert {"resnet50", "mobilenet_v2"} <= set(builtin_models()), "model files not installed"
    rng = np.random.default_rng(0)
    cases = [((2, 6, 9, 8), (8, 6, 3, 3), 1, 1, 1), ((1, 6, 11, 11), (4, 3, 3, 3), 2, 1, 2),
             ((1, 8, 10, 10), (8, 1, 3, 3), 1, 1, 8), ((1, 5, 7, 7), (6, 5, 1, 1), 1, 0, 1)]
    for isa in im2row.available_isas():
        im2row.set_isa(isa)
        for xs, ws, stride, pad, groups in cases:
            x = rng.uniform(-1, 1, xs).astype(np.float32)
            w = rng.uniform(-1, 1, ws).astype(np.float32)
            b = rng.uniform(-1, 1, ws[0]).astype(np.float32)
            for threads in (1, 2):
                y = im2row.conv2d(x, w, b, stride=stride, padding=pad, groups=groups,
                                  threads=threads)
                ref = direct(x, w, b, stride, pad, groups)
                err = np.abs(y - ref).max() / max(np.abs(ref).max(), 1.0)
                assert err < 1e-5, (isa, xs, ws, threads, err)
        print(f"smoke: conv2d ok on {isa}")
    im2row.set_isa("auto")
    # in-process: an emulated interpreter (tests/arm/run.sh) cannot start itself
    from im2row.__main__ import main as cli
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert cli(["info"]) == 0
    assert "kernel ISAs" in text.getvalue() and "caches" in text.getvalue(), text.getvalue()
    print("smoke: passed")


if __name__ == "__main__":
    main()
