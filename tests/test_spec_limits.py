"""Geometry at the edge of the integers (issue 13): strides, dilations and paddings too large
for the core are ValueErrors naming the argument (never OverflowError), and large ones that
fit still compute the right result."""
from __future__ import annotations

import numpy as np
import pytest

import im2row
from conftest import assert_matches_reference, make_operands

pytestmark = pytest.mark.usefixtures("no_tuned_plans")


@pytest.mark.parametrize("conv,name", [
    (dict(stride=2**63), "stride"),
    (dict(stride=2**40), "stride"),
    (dict(stride=(1, 2**64)), "stride"),
    (dict(stride=np.uint64(2**63)), "stride"),
    (dict(dilation=2**63), "dilation"),
    (dict(dilation=(2**70, 1)), "dilation"),
    (dict(padding=2**63), "padding"),
    (dict(padding=(0, 0, 0, 2**63)), "padding"),
    (dict(padding=2**40), "padding"),
    (dict(padding=2**40 - 1), "padded input"),
    (dict(padding=(0, 2**31, 0, 0)), "padded input"),
], ids=lambda v: str(v) if isinstance(v, str) else "-".join(f"{k}" for k in v))
def test_too_large_is_a_value_error(conv, name, rng):
    x, w, b = make_operands(rng, (1, 2, 5, 5), (2, 2, 3, 3))
    with pytest.raises(ValueError, match=name):
        im2row.conv2d(x, w, b, **conv)
    if name != "padded input":                                 # input-independent: at once
        with pytest.raises(ValueError, match=name):
            im2row.Conv2d(w, b, **conv)


@pytest.mark.parametrize("stride", [2**31, 2**40 - 1])
def test_huge_stride_that_fits(stride, rng):
    x, w, b = make_operands(rng, (1, 2, 5, 5), (3, 2, 3, 3))
    y = im2row.conv2d(x, w, b, stride=stride, padding=1)
    assert y.shape == (1, 3, 1, 1)
    assert_matches_reference(y, x, w, b, stride=stride, padding=1)
