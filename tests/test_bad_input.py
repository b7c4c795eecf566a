"""Invalid arguments raise a clear ValueError/TypeError naming the problem; none crashes."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import im2row

pytestmark = pytest.mark.usefixtures("no_tuned_plans")

F32 = np.float32


def _x(*shape):
    return np.zeros(shape, F32)


def _w(*shape):
    return np.ones(shape, F32)


# (description, callable, exception, message word)
SHAPE_CASES = [
    ("input-2d", lambda: im2row.conv2d(_x(8, 8), _w(2, 1, 3, 3)), ValueError, "3-D"),
    ("input-5d", lambda: im2row.conv2d(_x(1, 1, 1, 8, 8), _w(2, 1, 3, 3)), ValueError, "4-D"),
    ("input-1d", lambda: im2row.conv2d(_x(8), _w(2, 1, 3, 3)), ValueError, "3-D"),
    ("weight-3d", lambda: im2row.conv2d(_x(1, 1, 8, 8), _w(2, 3, 3)), ValueError, "weight"),
    ("weight-5d", lambda: im2row.conv2d(_x(1, 1, 8, 8), _w(2, 1, 1, 3, 3)), ValueError, "weight"),
    ("weight-zero-dim", lambda: im2row.conv2d(_x(1, 1, 8, 8), _w(2, 1, 0, 3)), ValueError, "weight"),
    ("weight-no-out-channels", lambda: im2row.conv2d(_x(1, 1, 8, 8), _w(0, 1, 3, 3)), ValueError,
     "weight"),
    ("channel-mismatch", lambda: im2row.conv2d(_x(1, 3, 8, 8), _w(2, 4, 3, 3)), ValueError,
     "channels"),
    ("group-channel-mismatch", lambda: im2row.conv2d(_x(1, 6, 8, 8), _w(4, 2, 3, 3), groups=2),
     ValueError, "channels"),
    ("nhwc-channel-mismatch", lambda: im2row.conv2d(_x(1, 8, 8, 3), _w(2, 4, 3, 3), layout="NHWC"),
     ValueError, "channels"),
    ("oc-not-divisible-by-groups", lambda: im2row.conv2d(_x(1, 4, 8, 8), _w(3, 2, 3, 3), groups=2),
     ValueError, "divisible"),
    ("groups-zero", lambda: im2row.conv2d(_x(1, 4, 8, 8), _w(4, 4, 3, 3), groups=0), ValueError,
     "groups"),
    ("groups-float", lambda: im2row.conv2d(_x(1, 4, 8, 8), _w(4, 2, 3, 3), groups=2.0), TypeError,
     "groups"),
    ("bias-length", lambda: im2row.conv2d(_x(1, 1, 8, 8), _w(2, 1, 3, 3), np.zeros(3, F32)),
     ValueError, "bias"),
    ("bias-2d", lambda: im2row.conv2d(_x(1, 1, 8, 8), _w(2, 1, 3, 3), np.zeros((2, 1), F32)),
     ValueError, "bias"),
    ("bias-scalar", lambda: im2row.conv2d(_x(1, 1, 8, 8), _w(2, 1, 3, 3), np.float32(1)),
     ValueError, "bias"),
    ("kernel-larger-than-input", lambda: im2row.conv2d(_x(1, 1, 4, 8), _w(2, 1, 5, 3)), ValueError,
     "larger"),
    ("dilated-kernel-larger", lambda: im2row.conv2d(_x(1, 1, 8, 8), _w(2, 1, 3, 3), dilation=4),
     ValueError, "larger"),
    ("kernel-larger-than-padded", lambda: im2row.conv2d(_x(1, 1, 4, 4), _w(2, 1, 7, 7), padding=1),
     ValueError, "larger"),
    ("empty-spatial", lambda: im2row.conv2d(_x(1, 1, 0, 8), _w(2, 1, 1, 1)), ValueError, ">= 1"),
    ("input-shape-2d", lambda: im2row.Conv2d(_w(2, 1, 3, 3), input_shape=(8, 8)), ValueError,
     "3-D"),
    ("input-shape-mismatch", lambda: im2row.Conv2d(_w(2, 1, 3, 3), input_shape=(3, 8, 8)),
     ValueError, "channels"),
    ("zero-channels", lambda: im2row.conv2d(_x(1, 0, 8, 8), _w(2, 0, 1, 1)), ValueError, "must be"),
]

ARG_CASES = [
    ("stride-zero", dict(stride=0), ValueError, "stride"),
    ("stride-negative", dict(stride=-1), ValueError, "stride"),
    ("stride-pair-zero", dict(stride=(1, 0)), ValueError, "stride"),
    ("stride-float", dict(stride=1.5), TypeError, "stride"),
    ("stride-bool", dict(stride=True), TypeError, "stride"),
    ("stride-triple", dict(stride=(1, 1, 1)), TypeError, "stride"),
    ("dilation-zero", dict(dilation=0), ValueError, "dilation"),
    ("dilation-negative", dict(dilation=(2, -1)), ValueError, "dilation"),
    ("padding-negative", dict(padding=-1), ValueError, "padding"),
    ("padding-pair-negative", dict(padding=(0, -2)), ValueError, "padding"),
    ("padding-4-negative", dict(padding=(0, 1, -1, 0)), ValueError, "padding"),
    ("padding-3-values", dict(padding=(1, 1, 1)), ValueError, "padding"),
    ("padding-unknown-string", dict(padding="full"), ValueError, "padding"),
    ("padding-float", dict(padding=1.0), TypeError, "padding"),
    ("padding-same-strided", dict(padding="same", stride=2), ValueError, "same"),
    ("padding-same-strided-w", dict(padding="same", stride=(1, 2)), ValueError, "same"),
    ("layout-unknown", dict(layout="NCWH"), ValueError, "layout"),
    ("layout-not-string", dict(layout=0), ValueError, "layout"),
]

DTYPE_CASES = [
    ("input-float64", np.float64, "input"),
    ("weight-float64", np.float64, "weight"),
    ("bias-float64", np.float64, "bias"),
    ("input-float16", np.float16, "input"),
    ("input-int32", np.int32, "input"),
    ("weight-int64", np.int64, "weight"),
]


@pytest.mark.parametrize("call,exc,word", [c[1:] for c in SHAPE_CASES],
                         ids=[c[0] for c in SHAPE_CASES])
def test_bad_shapes(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


@pytest.mark.parametrize("kwargs,exc,word", [c[1:] for c in ARG_CASES],
                         ids=[c[0] for c in ARG_CASES])
def test_bad_layer_arguments(kwargs, exc, word):
    x, w = _x(1, 2, 9, 9), _w(4, 2, 3, 3)
    with pytest.raises(exc, match=word):
        im2row.conv2d(x, w, **kwargs)
    # the layer object checks the same at construction, before any input is seen
    with pytest.raises(exc, match=word):
        im2row.Conv2d(w, **kwargs)


@pytest.mark.parametrize("dtype,which", [c[1:] for c in DTYPE_CASES],
                         ids=[c[0] for c in DTYPE_CASES])
def test_wrong_dtype_says_astype(dtype, which):
    arrays = dict(input=_x(1, 2, 6, 6), weight=_w(3, 2, 3, 3), bias=np.zeros(3, F32))
    arrays[which] = arrays[which].astype(dtype)
    with pytest.raises(TypeError, match="astype") as info:
        im2row.conv2d(arrays["input"], arrays["weight"], arrays["bias"])
    assert which in str(info.value)
    assert "float32" in str(info.value)


def test_wrong_dtype_in_layer_call():
    layer = im2row.Conv2d(_w(3, 2, 3, 3))
    with pytest.raises(TypeError, match="astype"):
        layer(np.zeros((1, 2, 6, 6)))
    with pytest.raises(TypeError, match="astype"):
        im2row.Conv2d(_w(3, 2, 3, 3).astype(np.float64))


def test_python_lists_are_refused_with_a_hint():
    with pytest.raises(TypeError, match="astype"):
        im2row.conv2d([[[[1.0, 2.0], [3.0, 4.0]]]], _w(1, 1, 1, 1))


# -- out= ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("out,exc,word", [
    (np.zeros((1, 4, 7, 8), F32), ValueError, "shape"),
    (np.zeros((4, 7, 7), F32), ValueError, "shape"),
    (np.zeros((1, 7, 7, 4), F32), ValueError, "shape"),      # NHWC-shaped out for an NCHW call
    (np.zeros((1, 4, 7, 7), np.float64), TypeError, "float32"),
    (np.zeros((1, 4, 7, 7), np.float16), TypeError, "float32"),
    ([[0.0]], TypeError, "float32"),
], ids=["wrong-spatial", "missing-batch", "nhwc-shape", "float64", "float16", "list"])
def test_bad_out(out, exc, word):
    x, w = _x(1, 2, 9, 9), _w(4, 2, 3, 3)
    with pytest.raises(exc, match=word):
        im2row.conv2d(x, w, out=out)


def test_out_read_only_is_refused():
    x, w = _x(1, 2, 9, 9), _w(4, 2, 3, 3)
    out = np.zeros((1, 4, 7, 7), F32)
    out.flags.writeable = False
    with pytest.raises(ValueError):
        im2row.conv2d(x, w, out=out)
    np.testing.assert_array_equal(out, 0)


@pytest.mark.skipif(bool(os.environ.get("IM2ROW_NO_SUBPROCESS")),
                    reason="IM2ROW_NO_SUBPROCESS: this run cannot start subprocesses")
def test_read_only_memmap_out_does_not_crash(tmp_path):
    """Writing through a read-only mapping would kill the interpreter: run it in a child."""
    path = tmp_path / "out.bin"
    np.zeros((1, 4, 7, 7), F32).tofile(path)
    code = textwrap.dedent(f"""
        import numpy as np, im2row
        out = np.memmap({str(path)!r}, dtype=np.float32, mode="r", shape=(1, 4, 7, 7))
        x, w = np.ones((1, 2, 9, 9), np.float32), np.ones((4, 2, 3, 3), np.float32)
        try:
            im2row.conv2d(x, w, out=out)
        except ValueError:
            print("refused")
        else:
            print("wrote")
    """)
    root = os.path.dirname(os.path.dirname(im2row.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "refused"


# -- plans ---------------------------------------------------------------------------------------
def _plan_cases():
    isa = im2row.available_isas()[0]
    return [
        ("depthwise-on-dense", (1, 4, 8, 8), (4, 4, 3, 3), {}, im2row.Plan("depthwise"), "valid"),
        ("pointwise-on-3x3", (1, 4, 8, 8), (4, 4, 3, 3), {}, im2row.Plan("pointwise"), "valid"),
        ("depthwise-on-grouped", (1, 4, 8, 8), (4, 2, 3, 3), dict(groups=2),
         im2row.Plan("depthwise"), "valid"),
        ("unknown-algorithm", (1, 4, 8, 8), (4, 4, 3, 3), {},
         im2row.Plan(algorithm="winograd", column_block=1), "valid"),
        ("incremental-block-0", (1, 4, 8, 8), (4, 4, 3, 3), {},
         im2row.Plan(algorithm="incremental", column_block=0), "column_block"),
        ("incremental-block-negative", (1, 4, 8, 8), (4, 4, 3, 3), {},
         im2row.Plan(algorithm="incremental", column_block=-3), "column_block"),
        ("channel-block-negative", (1, 4, 8, 8), (4, 4, 3, 3), {},
         im2row.Plan(algorithm="incremental", column_block=1, channel_block=-16), "channel_block"),
        ("row-block-negative", (1, 4, 8, 8), (4, 4, 3, 3), {},
         im2row.Plan(algorithm="incremental", column_block=1, row_block=-1), "row_block"),
        ("unknown-isa", (1, 4, 8, 8), (4, 4, 3, 3), {}, im2row.Plan("classic", isa="sse9"),
         "available"),
        ("unknown-gemm", (1, 4, 8, 8), (4, 4, 3, 3), {}, im2row.Plan("classic", gemm="mkl"), "gemm"),
        ("unknown-parallel", (1, 4, 8, 8), (4, 4, 3, 3), {},
         im2row.Plan("classic", parallel="gpu"), "parallel"),
        ("incremental-stride-65", (1, 2, 140, 8), (2, 2, 3, 3), dict(stride=(65, 1)),
         im2row.Plan(algorithm="incremental", column_block=1, isa=isa), "valid"),
    ]


@pytest.mark.parametrize("x_shape,w_shape,conv,plan,word", [c[1:] for c in _plan_cases()],
                         ids=[c[0] for c in _plan_cases()])
def test_invalid_plan(x_shape, w_shape, conv, plan, word):
    x, w = _x(*x_shape), _w(*w_shape)
    with pytest.raises(ValueError, match=word):
        im2row.conv2d(x, w, **conv, plan=plan)
    with pytest.raises(ValueError, match=word):
        im2row.Conv2d(w, **conv, plan=plan, input_shape=x_shape)


def test_plan_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown"):
        im2row.Plan.from_dict({"algorithm": "classic", "tile": 4})
    plan = im2row.Plan(algorithm="incremental", column_block=3, gemm="packed", isa="scalar")
    assert im2row.Plan.from_dict(plan.to_dict()) == plan


def test_layer_rejects_input_of_another_shape_cleanly():
    layer = im2row.Conv2d(_w(4, 2, 3, 3), input_shape=(2, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        layer(_x(1, 3, 8, 8))
    with pytest.raises(ValueError, match="larger"):
        layer(_x(1, 2, 2, 8))
    # and still works afterwards
    assert layer(_x(2, 2, 8, 8)).shape == (2, 4, 6, 6)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"], ids=str)
def test_bad_thread_count(threads):
    with pytest.raises(ValueError, match="threads"):
        im2row.conv2d(_x(1, 2, 6, 6), _w(3, 2, 3, 3), threads=threads)
    with pytest.raises(ValueError, match="threads"):
        im2row.set_num_threads(threads)


def test_nan_and_inf_propagate_like_torch():
    """Non-finite inputs are data, not errors: they reach exactly the outputs whose windows
    contain them."""
    x = np.zeros((1, 1, 6, 6), F32)
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 5, 5] = np.inf
    y = im2row.conv2d(x, _w(1, 1, 3, 3))
    assert np.isnan(y[0, 0, 0, 0]) and np.isinf(y[0, 0, 3, 3])
    assert np.isfinite(y[0, 0, 1:3, 1:3]).all() and np.isfinite(y[0, 0, 0, 1:]).all()


@pytest.mark.parametrize("block", ["3", 2.5, 10**30, None], ids=["str", "float", "huge", "none"])
def test_plan_column_block_of_wrong_type(block):
    x, w = _x(1, 2, 8, 8), _w(3, 2, 3, 3)
    with pytest.raises((TypeError, ValueError), match="column_block"):
        im2row.conv2d(x, w, plan=im2row.Plan(algorithm="incremental", column_block=block))
