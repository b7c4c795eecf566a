"""im2row.conv2d with its default plan, on every available ISA, against the float64 reference:
kernel sizes x strides x dilations, padding forms, groups and channel counts, batch sizes,
unbatched input, NHWC, non-contiguous arrays, bias."""
import numpy as np
import pytest

import im2row
from conftest import assert_matches_reference, make_operands, reference_pair, shape_id

pytestmark = pytest.mark.usefixtures("no_tuned_plans")

KERNELS = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (7, 1), (2, 3)]


# -- kernel size x stride x dilation ------------------------------------------------------------
@pytest.mark.parametrize("dilation", [1, 2, 3], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("stride", [1, 2, 3], ids=lambda s: f"s{s}")
@pytest.mark.parametrize("kernel", KERNELS, ids=shape_id)
def test_kernel_stride_dilation(kernel, stride, dilation, isa, rng):
    # non-square input, big enough for a 7x7 kernel dilated by 3 (span 19) with padding 1
    x, w, b = make_operands(rng, (2, 5, 23, 19), (6, 5) + kernel, bias=(stride + dilation) % 2 == 0)
    y = im2row.conv2d(x, w, b, stride=stride, padding=1, dilation=dilation)
    assert_matches_reference(y, x, w, b, stride=stride, padding=1, dilation=dilation)


# -- anisotropic stride / dilation --------------------------------------------------------------
@pytest.mark.parametrize("stride,dilation", [((2, 1), 1), ((1, 3), 1), ((3, 2), (1, 2)),
                                             (1, (2, 1)), ((2, 2), (3, 1)), ((1, 2), (2, 2))],
                         ids=lambda v: shape_id(v))
@pytest.mark.parametrize("kernel", [(3, 3), (2, 3), (1, 7), (7, 1)], ids=shape_id)
def test_anisotropic_stride_and_dilation(kernel, stride, dilation, isa, rng):
    x, w, b = make_operands(rng, (1, 4, 17, 21), (5, 4) + kernel)
    y = im2row.conv2d(x, w, b, stride=stride, padding=(1, 2), dilation=dilation)
    assert_matches_reference(y, x, w, b, stride=stride, padding=(1, 2), dilation=dilation)


# -- padding forms ------------------------------------------------------------------------------
PADDINGS = [0, 2, (1, 2), (2, 0), (0, 1, 2, 3), (3, 0, 0, 2), (2, 2, 0, 0), (0, 0, 1, 1),
            "same", "valid"]


@pytest.mark.parametrize("dilation", [1, 2], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("padding", PADDINGS, ids=lambda p: f"p{shape_id(p)}")
@pytest.mark.parametrize("kernel", [(3, 3), (2, 3), (5, 5), (1, 7), (1, 1)], ids=shape_id)
def test_padding_forms(kernel, padding, dilation, isa, rng):
    x, w, b = make_operands(rng, (2, 3, 13, 16), (4, 3) + kernel)
    y = im2row.conv2d(x, w, b, padding=padding, dilation=dilation)
    assert_matches_reference(y, x, w, b, padding=padding, dilation=dilation)
    if padding == "same":
        assert y.shape[2:] == x.shape[2:]


@pytest.mark.parametrize("stride", [2, 3, (1, 2)], ids=lambda s: f"s{shape_id(s)}")
@pytest.mark.parametrize("padding", [(0, 1, 2, 3), (3, 2, 1, 0), (4, 0, 0, 4), (1, 1)],
                         ids=lambda p: f"p{shape_id(p)}")
@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (1, 1), (2, 3)], ids=shape_id)
def test_asymmetric_padding_with_stride(kernel, padding, stride, isa, rng):
    x, w, b = make_operands(rng, (1, 6, 15, 12), (7, 6) + kernel)
    y = im2row.conv2d(x, w, b, stride=stride, padding=padding)
    assert_matches_reference(y, x, w, b, stride=stride, padding=padding)


def test_padding_larger_than_kernel(isa, rng):
    # windows that fall entirely in the padding produce bias only
    x, w, b = make_operands(rng, (1, 2, 5, 6), (3, 2, 3, 3))
    y = im2row.conv2d(x, w, b, padding=(4, 5, 3, 6))
    assert_matches_reference(y, x, w, b, padding=(4, 5, 3, 6))
    np.testing.assert_array_equal(y[0, :, 0, 0], b)


# -- groups and channel counts ------------------------------------------------------------------
# (in_channels, out_channels, groups)
CHANNELS = [(1, 1, 1), (1, 5, 1), (3, 1, 1), (17, 33, 1), (70, 9, 1), (4, 6, 2), (6, 9, 3),
            (64, 32, 4), (70, 14, 7), (70, 70, 35), (2, 2, 2), (8, 8, 8), (8, 16, 8),
            (13, 39, 13), (70, 70, 70), (70, 140, 70)]


@pytest.mark.parametrize("stride", [1, 2], ids=lambda s: f"s{s}")
@pytest.mark.parametrize("kernel", [(3, 3), (1, 1), (5, 2)], ids=shape_id)
@pytest.mark.parametrize("channels", CHANNELS, ids=lambda c: "c{}-oc{}-g{}".format(*c))
def test_groups_and_channels(channels, kernel, stride, isa, rng):
    c, oc, groups = channels
    x, w, b = make_operands(rng, (2, c, 11, 9), (oc, c // groups) + kernel)
    y = im2row.conv2d(x, w, b, stride=stride, padding=1, groups=groups)
    assert_matches_reference(y, x, w, b, stride=stride, padding=1, groups=groups)


@pytest.mark.parametrize("multiplier", [1, 2, 3], ids=lambda m: f"x{m}")
@pytest.mark.parametrize("conv", [dict(stride=1, padding=1, dilation=1),
                                  dict(stride=2, padding=1, dilation=1),
                                  dict(stride=1, padding=2, dilation=2),
                                  dict(stride=(2, 1), padding=(0, 1, 2, 1), dilation=(1, 3)),
                                  dict(stride=3, padding=0, dilation=1)],
                         ids=lambda d: "s{stride}-p{padding}-d{dilation}".format(**d))
@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (1, 1), (3, 1), (7, 7)], ids=shape_id)
def test_depthwise(kernel, conv, multiplier, isa, rng):
    c = 12
    x, w, b = make_operands(rng, (2, c, 19, 22), (c * multiplier, 1) + kernel)
    y = im2row.conv2d(x, w, b, groups=c, **conv)
    assert_matches_reference(y, x, w, b, groups=c, **conv)


# -- batch sizes and unbatched input ------------------------------------------------------------
@pytest.mark.parametrize("batch", [0, 1, 3], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("conv", [dict(kernel=(3, 3), stride=1, padding=1, groups=1),
                                  dict(kernel=(1, 1), stride=1, padding=0, groups=1),
                                  dict(kernel=(1, 1), stride=2, padding=0, groups=1),
                                  dict(kernel=(3, 3), stride=2, padding=1, groups=6),
                                  dict(kernel=(5, 5), stride=2, padding=2, groups=2)],
                         ids=lambda d: "k{}-s{stride}-g{groups}".format(shape_id(d["kernel"]), **d))
def test_batch_sizes(batch, conv, isa, rng):
    conv = dict(conv)
    kernel = conv.pop("kernel")
    x, w, b = make_operands(rng, (batch, 6, 10, 13), (12, 6 // conv["groups"]) + kernel)
    ref, mag = reference_pair(x, w, b, **conv)
    y = im2row.conv2d(x, w, b, **conv)
    assert_matches_reference(y, x, w, b, expected=(ref, mag), **conv)
    if batch == 3:
        # images are independent: each one alone gives its slice of the batched result
        for n in range(batch):
            single = im2row.conv2d(x[n], w, b, **conv)
            assert_matches_reference(single, x[n], w, b, expected=(ref[n], mag[n]), **conv)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("kernel,groups", [((3, 3), 1), ((1, 1), 1), ((3, 3), 4), ((2, 3), 2)],
                         ids=lambda v: shape_id(v))
def test_unbatched_input(kernel, groups, layout, isa, rng):
    shape = (4, 9, 7) if layout == "NCHW" else (9, 7, 4)
    x, w, b = make_operands(rng, shape, (8, 4 // groups) + kernel)
    y = im2row.conv2d(x, w, b, padding=1, groups=groups, layout=layout)
    assert y.ndim == 3
    assert_matches_reference(y, x, w, b, padding=1, groups=groups, layout=layout)


# -- NHWC layout --------------------------------------------------------------------------------
NHWC_CASES = [
    dict(kernel=(3, 3), stride=1, padding=1, dilation=1, groups=1),
    dict(kernel=(3, 3), stride=2, padding=(0, 1, 1, 0), dilation=1, groups=1),
    dict(kernel=(1, 1), stride=1, padding=0, dilation=1, groups=1),
    dict(kernel=(1, 1), stride=2, padding=0, dilation=1, groups=2),
    dict(kernel=(3, 3), stride=1, padding=2, dilation=2, groups=8),
    dict(kernel=(5, 5), stride=2, padding="valid", dilation=1, groups=8),
    dict(kernel=(2, 3), stride=1, padding="same", dilation=1, groups=4),
    dict(kernel=(7, 1), stride=(1, 2), padding=(3, 0), dilation=1, groups=1),
]


@pytest.mark.parametrize("batch", [0, 1, 2], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("conv", NHWC_CASES,
                         ids=lambda d: "k{}-s{}-p{}-d{}-g{}".format(
                             shape_id(d["kernel"]), shape_id(d["stride"]), shape_id(d["padding"]),
                             d["dilation"], d["groups"]))
def test_nhwc_layout(conv, batch, isa, rng):
    conv = dict(conv)
    kernel = conv.pop("kernel")
    c = 8
    oc = 16 if conv["groups"] == c else 12
    x, w, b = make_operands(rng, (batch, 12, 11, c), (oc, c // conv["groups"]) + kernel)
    y = im2row.conv2d(x, w, b, layout="NHWC", **conv)
    assert_matches_reference(y, x, w, b, layout="NHWC", **conv)
    assert y.flags.c_contiguous


# -- non-contiguous arrays ----------------------------------------------------------------------
def _transposed_hw(rng, shape):
    n, c, h, w = shape
    base = rng.uniform(-1, 1, (n, c, w, h)).astype(np.float32)
    return base.transpose(0, 1, 3, 2)


def _step_slice(rng, shape):
    n, c, h, w = shape
    base = rng.uniform(-1, 1, (n + 1, 2 * c, 2 * h + 1, 3 * w)).astype(np.float32)
    return base[1:, ::2, 1::2, ::3]


def _reversed(rng, shape):
    base = rng.uniform(-1, 1, shape).astype(np.float32)
    return base[:, ::-1, :, ::-1]


def _fortran(rng, shape):
    return np.asfortranarray(rng.uniform(-1, 1, shape).astype(np.float32))


def _channels_last_memory(rng, shape):
    n, c, h, w = shape
    return rng.uniform(-1, 1, (n, h, w, c)).astype(np.float32).transpose(0, 3, 1, 2)


VIEWS = {"transposed": _transposed_hw, "step-slice": _step_slice, "reversed": _reversed,
         "fortran": _fortran, "channels-last-memory": _channels_last_memory}


@pytest.mark.parametrize("conv", [dict(kernel=(3, 3), stride=1, groups=1),
                                  dict(kernel=(3, 3), stride=2, groups=3),
                                  dict(kernel=(1, 1), stride=1, groups=1),
                                  dict(kernel=(3, 3), stride=1, groups=6)],
                         ids=lambda d: "k{}-s{stride}-g{groups}".format(shape_id(d["kernel"]), **d))
@pytest.mark.parametrize("view", list(VIEWS), ids=str)
def test_non_contiguous_input(view, conv, isa, rng):
    conv = dict(conv)
    kernel = conv.pop("kernel")
    padding = 0 if kernel == (1, 1) else 1
    x = VIEWS[view](rng, (2, 6, 9, 10))
    assert not x.flags.c_contiguous
    _, w, b = make_operands(rng, (1, 1, 1, 1), (6, 6 // conv["groups"]) + kernel)
    y = im2row.conv2d(x, w, b, padding=padding, **conv)
    assert_matches_reference(y, x, w, b, padding=padding, **conv)


def test_non_contiguous_weight_and_bias(isa, rng):
    x = rng.uniform(-1, 1, (2, 4, 8, 9)).astype(np.float32)
    w_base = rng.uniform(-1, 1, (5, 4, 3, 3)).astype(np.float32)
    w = w_base.transpose(0, 1, 3, 2)[::-1]               # (5, 4, 3, 3), non-contiguous
    b = rng.uniform(-1, 1, 10).astype(np.float32)[::2]   # (5,), stride 8 bytes
    assert not w.flags.c_contiguous and not b.flags.c_contiguous
    y = im2row.conv2d(x, w, b, padding=1)
    assert_matches_reference(y, x, w, b, padding=1)


def test_nhwc_non_contiguous_input(isa, rng):
    base = rng.uniform(-1, 1, (2, 6, 9, 12)).astype(np.float32)   # NCHW memory
    x = base.transpose(0, 2, 3, 1)[:, ::2, 1:, :]                  # NHWC view, stepped
    _, w, b = make_operands(rng, (1, 1, 1, 1), (4, 6, 3, 3))
    y = im2row.conv2d(x, w, b, padding=1, stride=(1, 2), layout="NHWC")
    assert_matches_reference(y, x, w, b, padding=1, stride=(1, 2), layout="NHWC")


def test_read_only_input(isa, rng):
    x, w, b = make_operands(rng, (2, 3, 8, 9), (4, 3, 3, 3))
    for array in (x, w, b):
        array.flags.writeable = False
    y = im2row.conv2d(x, w, b, padding=1)
    assert_matches_reference(y, x, w, b, padding=1)


def test_input_not_modified(isa, rng):
    x, w, b = make_operands(rng, (2, 3, 8, 8), (4, 3, 3, 3))
    x0, w0, b0 = x.copy(), w.copy(), b.copy()
    im2row.conv2d(x, w, b, padding=1, stride=2)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(b, b0)


# -- bias ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel,groups", [((3, 3), 1), ((1, 1), 1), ((3, 3), 4), ((3, 3), 2)],
                         ids=lambda v: shape_id(v))
def test_bias_is_added_per_output_channel(kernel, groups, isa, rng):
    x, w, b = make_operands(rng, (2, 4, 7, 8), (8, 4 // groups) + kernel)
    b = (b * 100).astype(np.float32)
    padding = 1 if kernel == (3, 3) else 0
    y_bias = im2row.conv2d(x, w, b, padding=padding, groups=groups)
    y_none = im2row.conv2d(x, w, None, padding=padding, groups=groups)
    y_zero = im2row.conv2d(x, w, np.zeros(8, np.float32), padding=padding, groups=groups)
    assert_matches_reference(y_bias, x, w, b, padding=padding, groups=groups)
    assert_matches_reference(y_none, x, w, None, padding=padding, groups=groups)
    np.testing.assert_array_equal(y_zero, y_none)


# -- extremes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [
    dict(x=(1, 3, 5, 5), w=(2, 3, 5, 5), stride=1, padding=0, dilation=1),       # 1x1 output
    dict(x=(1, 3, 3, 3), w=(2, 3, 5, 5), stride=1, padding=1, dilation=1),       # kernel = padded
    dict(x=(2, 2, 1, 17), w=(3, 2, 1, 3), stride=1, padding=0, dilation=1),      # one row
    dict(x=(2, 2, 17, 1), w=(3, 2, 3, 1), stride=2, padding=0, dilation=1),      # one column
    dict(x=(1, 2, 1, 1), w=(3, 2, 1, 1), stride=1, padding=0, dilation=1),       # 1x1 everything
    dict(x=(1, 2, 1, 1), w=(3, 2, 3, 3), stride=1, padding=1, dilation=1),       # all padding
    dict(x=(1, 4, 20, 20), w=(3, 4, 3, 3), stride=5, padding=1, dilation=1),     # stride > kernel
    dict(x=(1, 4, 20, 21), w=(3, 4, 2, 2), stride=(7, 4), padding=0, dilation=(9, 8)),
    dict(x=(1, 3, 9, 40), w=(2, 3, 1, 4), stride=(1, 9), padding=(0, 3), dilation=(1, 3)),
    dict(x=(1, 2, 30, 8), w=(2, 2, 11, 1), stride=1, padding=(5, 0), dilation=1),  # tall kernel
], ids=lambda d: "x{}-w{}-s{}-d{}".format(shape_id(d["x"]), shape_id(d["w"]),
                                          shape_id(d["stride"]), shape_id(d["dilation"])))
def test_extreme_shapes(case, isa, rng):
    x, w, b = make_operands(rng, case["x"], case["w"])
    conv = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    y = im2row.conv2d(x, w, b, **conv)
    assert_matches_reference(y, x, w, b, **conv)


@pytest.mark.parametrize("kernel", [(3, 3), (1, 1)], ids=shape_id)
def test_stride_beyond_incremental_limit(kernel, rng):
    """torch accepts any stride; a vertical stride above the incremental schedule's limit (64)
    must still convolve (with a plan that supports it), not be refused."""
    x, w, b = make_operands(rng, (1, 2, 150, 140), (3, 2) + kernel)
    y = im2row.conv2d(x, w, b, stride=70, padding=1)
    assert_matches_reference(y, x, w, b, stride=70, padding=1)
