"""The oracle itself: tests/reference.py against torch (when installed) and against scalar loops
written straight from the definition (always)."""
import numpy as np
import pytest

from conftest import assert_matches_reference, shape_id, uniform
from reference import conv2d_naive, conv2d_reference, explicit_padding

# (x shape, weight shape, stride, padding, dilation, groups)
CASES = [
    ((2, 3, 9, 11), (4, 3, 3, 3), 1, 0, 1, 1),
    ((2, 3, 9, 11), (4, 3, 3, 3), 2, 1, 1, 1),
    ((1, 4, 10, 7), (6, 2, 2, 3), (2, 1), (1, 2), (1, 2), 2),
    ((1, 5, 12, 12), (5, 1, 3, 3), 1, "same", 2, 5),
    ((2, 4, 8, 9), (8, 1, 3, 2), 1, "same", 1, 4),
    ((1, 6, 11, 13), (4, 6, 1, 7), (1, 3), (0, 3, 1, 2), 1, 1),
    ((3, 2, 14, 6), (3, 2, 7, 1), 3, (3, 0), (2, 1), 1),
    ((1, 3, 8, 8), (2, 3, 5, 5), 1, "valid", 1, 1),
    ((0, 3, 8, 8), (2, 3, 3, 3), 1, 1, 1, 1),
]
IDS = [f"x{shape_id(c[0])}-w{shape_id(c[1])}-s{shape_id(c[2])}-p{shape_id(c[3])}"
       f"-d{shape_id(c[4])}-g{c[5]}" for c in CASES]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_matches_torch(case, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x_shape, w_shape, stride, padding, dilation, groups = case
    x = uniform(rng, x_shape).astype(np.float64)
    w = uniform(rng, w_shape).astype(np.float64)
    b = uniform(rng, (w_shape[0],)).astype(np.float64)
    ref = conv2d_reference(x, w, b, stride, padding, dilation, groups)

    xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
    if isinstance(padding, tuple) and len(padding) == 4:
        top, left, bottom, right = padding
        xt = F.pad(xt, (left, right, top, bottom))
        padding = 0
    expected = F.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation,
                        groups=groups).numpy()
    assert ref.shape == expected.shape
    np.testing.assert_allclose(ref, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_matches_scalar_loops(case, rng):
    x_shape, w_shape, stride, padding, dilation, groups = case
    x, w = uniform(rng, x_shape), uniform(rng, w_shape)
    b = uniform(rng, (w_shape[0],))
    ref = conv2d_reference(x, w, b, stride, padding, dilation, groups)
    naive = conv2d_naive(x, w, b, stride, padding, dilation, groups)
    assert ref.shape == naive.shape
    np.testing.assert_allclose(ref, naive, rtol=1e-12, atol=1e-12)


def test_reference_layouts_and_unbatched(rng):
    x = uniform(rng, (2, 3, 7, 9))
    w = uniform(rng, (5, 3, 3, 2))
    ref = conv2d_reference(x, w, None, 2, (1, 0, 2, 1), (1, 2))
    nhwc = conv2d_reference(x.transpose(0, 2, 3, 1), w, None, 2, (1, 0, 2, 1), (1, 2),
                            layout="NHWC")
    np.testing.assert_array_equal(nhwc, ref.transpose(0, 2, 3, 1))
    single = conv2d_reference(x[1], w, None, 2, (1, 0, 2, 1), (1, 2))
    np.testing.assert_array_equal(single, ref[1])


def test_reference_identity_kernel_and_same_padding(rng):
    x = uniform(rng, (1, 2, 6, 5))
    w = np.zeros((2, 1, 3, 3))
    w[:, 0, 1, 1] = 1.0
    np.testing.assert_array_equal(conv2d_reference(x, w, padding="same", groups=2), x)
    assert explicit_padding("same", (4, 1), (3, 1)) == (4, 0, 5, 0)
    assert explicit_padding("valid", (4, 4), (1, 1)) == (0, 0, 0, 0)


@pytest.mark.parametrize("channels", [4, 512])
def test_tolerance_catches_one_wrong_tap(channels, rng):
    """The comparison the suite uses passes float32 rounding of the exact result and fails a
    result that misses a single kernel tap of a single input channel, even at K = 4608."""
    x = uniform(rng, (1, channels, 7, 7))
    w = uniform(rng, (8, channels, 3, 3))
    exact = conv2d_reference(x, w, padding=1)
    assert_matches_reference(exact.astype(np.float32), x, w, padding=1)
    w_wrong = w.copy()
    w_wrong[:, channels // 2, 2, 0] = 0.0
    wrong = conv2d_reference(x, w_wrong, padding=1).astype(np.float32)
    with pytest.raises(AssertionError, match="outputs wrong"):
        assert_matches_reference(wrong, x, w, padding=1)
