"""The channels-last path (Plan.layout='NHWC': indirect, rowwise, depthwise) against the float64
reference: the shape sweep of the NCHW tests (kernels, strides, dilations, padding forms,
groups, depthwise, channel counts across the kernels' tiles, batch 0-3) x every NHWC
algorithm x caller layout x ISA x threads x band height; NHWC views, out=, workspace."""
import numpy as np
import pytest

import im2row
from im2row.plan import nhwc_algorithms, scratch_bytes
from conftest import ISAS, assert_matches_reference, make_operands, reference_pair, shape_id

pytestmark = pytest.mark.usefixtures("no_tuned_plans")

# (input (C, H, W), weight (OC, C/groups, kh, kw), conv arguments)
CASES = [
    ((5, 11, 9), (6, 5, 3, 3), dict(padding=1)),
    ((5, 11, 9), (6, 5, 1, 1), dict()),
    ((5, 11, 9), (6, 5, 1, 1), dict(stride=2)),
    ((4, 13, 12), (7, 4, 5, 5), dict(padding=2, stride=2)),
    ((3, 17, 21), (5, 3, 1, 7), dict(padding=(0, 3))),
    ((3, 17, 21), (5, 3, 7, 1), dict(padding=(3, 0), stride=(1, 2))),
    ((3, 10, 12), (4, 3, 2, 3), dict(padding="same")),
    ((6, 15, 12), (7, 6, 3, 3), dict(padding=(0, 1, 2, 3), stride=(2, 3))),
    ((6, 15, 12), (7, 6, 5, 5), dict(padding=(3, 2, 1, 0), stride=3)),
    ((4, 17, 21), (5, 4, 3, 3), dict(padding=(1, 2), stride=(3, 2), dilation=(1, 2))),
    ((4, 17, 21), (5, 4, 2, 3), dict(padding=1, dilation=(2, 1))),
    ((5, 23, 19), (6, 5, 7, 7), dict(padding=1, dilation=3)),
    ((2, 5, 6), (3, 2, 3, 3), dict(padding=(4, 5, 3, 6))),          # windows wholly in padding
    ((17, 9, 8), (33, 17, 3, 3), dict(padding=1)),                 # column tails of every tile
    ((70, 6, 7), (9, 70, 3, 3), dict(padding="valid")),
    ((8, 9, 10), (70, 8, 1, 1), dict()),
    ((6, 9, 8), (9, 2, 3, 3), dict(padding=1, groups=3)),
    ((64, 7, 6), (32, 16, 3, 3), dict(padding=1, stride=2, groups=4)),
    ((70, 8, 7), (14, 10, 5, 2), dict(padding=(2, 1), groups=7)),
    ((8, 12, 11), (16, 1, 3, 3), dict(padding=2, dilation=2, groups=8)),   # depthwise x2
    ((8, 12, 11), (8, 1, 3, 3), dict(padding=1, groups=8)),
    ((70, 9, 8), (70, 1, 3, 3), dict(padding=1, stride=2, groups=70)),     # channel tails
    ((13, 10, 9), (13, 1, 5, 5), dict(padding=(2, 1, 0, 3), groups=13)),
    ((24, 8, 9), (24, 1, 3, 1), dict(padding=(1, 0), stride=(2, 1), dilation=(2, 1), groups=24)),
    ((40, 5, 6), (40, 1, 7, 7), dict(padding=3, groups=40)),
    ((2, 5, 6), (2, 1, 3, 3), dict(padding="same", groups=2)),
    ((6, 11, 1), (5, 6, 3, 1), dict(padding=(1, 0), stride=(2, 1))),   # a column, run as a row
    # dilations past half the map: most windows have kernel rows wholly in the vertical
    # padding (skipped), some have none inside; bands hold only the rows their taps read
    ((6, 7, 9), (5, 6, 3, 3), dict(padding=5, dilation=5)),
    ((8, 6, 7), (6, 8, 3, 2), dict(padding=(6, 1), dilation=(6, 1))),
    ((6, 9, 8), (6, 2, 3, 3), dict(padding=(7, 2, 4, 2), dilation=(4, 2), stride=(2, 1), groups=3)),
    ((8, 7, 7), (8, 1, 3, 3), dict(padding=6, dilation=6, groups=8)),
    ((5, 4, 6), (4, 5, 2, 3), dict(padding=(5, 1, 5, 1), dilation=(7, 1))),
    # wide rows with dilations past a third of them (DeepLab's ASPP): calls per row and stretch
    # of columns, over the kernel columns inside; some windows have no column inside at all
    ((3, 9, 33), (4, 3, 3, 3), dict(padding=12, dilation=12)),
    ((4, 6, 33), (6, 2, 3, 3), dict(padding=(2, 18), dilation=(2, 18), groups=2)),
    ((5, 5, 40), (3, 5, 3, 5), dict(padding=(1, 16), dilation=(1, 8), stride=(1, 2))),
    ((2, 4, 5), (3, 2, 1, 3), dict(padding=(0, 12), dilation=(1, 5))),
]


def _case_id(case):
    (c, h, w), wshape, conv = case
    return f"c{c}-{h}x{w}-oc{wshape[0]}-k{shape_id(wshape[2:])}-" + "-".join(
        f"{k[0]}{shape_id(v)}" for k, v in conv.items())


def _operands(rng, case, batch, layout):
    (c, h, w), wshape, conv = case
    x, weight, bias = make_operands(rng, (batch, c, h, w), wshape, bias=batch != 2)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x, weight, bias


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_every_nhwc_plan_matches_reference(case, isa, rng):
    """Every NHWC algorithm valid for the shape, for NHWC and NCHW callers, 1-2 threads, one
    band of all rows, bands of one row and of three (a short last band), k slices of the weight panels from the model's,
    one k step, parts of a tap's channels and whole taps."""
    idx = CASES.index(case)
    batch = idx % 4
    _, wshape, conv = case
    for layout in ("NHWC", "NCHW"):
        x, w, b = _operands(rng, case, batch, layout)
        expected = reference_pair(x, w, b, layout=layout, **conv)
        spec = im2row.make_spec(x.shape, w.shape, layout=layout, **conv)
        algorithms = nhwc_algorithms(spec)
        assert "indirect" in algorithms
        for algorithm in algorithms:
            for threads in (1, 2):
                for rows, kslice in ((0, 0), (1, 0), (3, 0), (0, 1), (1, 7), (0, 20)):
                    plan = im2row.Plan(algorithm, row_block=rows, gemm="packed", isa=isa,
                                       layout="NHWC", gemm_kc=kslice)
                    layer = im2row.Conv2d(w, b, layout=layout, plan=plan, threads=threads, **conv)
                    y = layer(x)
                    assert layer.plan.layout == "NHWC"
                    assert_matches_reference(y, x, w, b, expected=expected, layout=layout, **conv)
                    assert y.flags.c_contiguous


def test_one_registry_of_nhwc_algorithms():
    from im2row import _core
    from im2row.plan import ALGORITHMS, NHWC_ALGORITHMS
    assert set(NHWC_ALGORITHMS) == set(_core.NHWC_ALGORITHMS)
    assert set(NHWC_ALGORITHMS) <= set(ALGORITHMS)


def test_nhwc_algorithms_by_shape():
    dense = im2row.make_spec((1, 8, 9, 9), (4, 8, 3, 3), layout="NCHW", padding=1)
    assert nhwc_algorithms(dense) == ["indirect", "rowwise"]
    assert nhwc_algorithms(im2row.make_spec((1, 8, 9, 9), (4, 8, 1, 1))) == ["indirect"]
    assert nhwc_algorithms(im2row.make_spec((1, 8, 9, 9), (4, 4, 3, 3), groups=2)) == ["indirect"]
    assert nhwc_algorithms(im2row.make_spec((1, 8, 9, 9), (4, 8, 3, 3), dilation=(1, 2))) == [
        "indirect"]
    assert nhwc_algorithms(im2row.make_spec((1, 8, 9, 9), (8, 1, 3, 3), groups=8)) == [
        "indirect", "depthwise"]
    assert nhwc_algorithms(im2row.make_spec((1, 8, 9, 9), (16, 1, 3, 3), groups=8)) == ["indirect"]


@pytest.mark.parametrize("plan,conv,message", [
    (im2row.Plan("indirect"), dict(), "not valid"),                       # indirect is NHWC only
    (im2row.Plan("rowwise", layout="NHWC"), dict(groups=2), "not valid"),
    (im2row.Plan("depthwise", layout="NHWC"), dict(groups=2, oc=4), "not valid"),
    (im2row.Plan("indirect", layout="NCHWc"), dict(), "layout"),
    (im2row.Plan("indirect", layout="NHWC", parallel="blas"), dict(), "blas"),
])
def test_invalid_nhwc_plans_are_rejected(plan, conv, message, rng):
    groups = conv.get("groups", 1)
    oc = conv.get("oc", 2)
    x, w, b = make_operands(rng, (1, 2, 6, 6), (oc, 2 // groups, 3, 3))
    with pytest.raises(ValueError, match=message):
        im2row.conv2d(x, w, b, groups=groups, plan=plan)


def test_nhwc_callers_default_to_the_nhwc_path(rng):
    if im2row.get_isa() == "scalar":
        pytest.skip("a scalar-only build transposes NHWC callers to the sgemm path")
    for wshape, groups in (((8, 8, 3, 3), 1), ((8, 8, 1, 1), 1), ((8, 1, 3, 3), 8), ((8, 2, 3, 3), 4)):
        spec = im2row.make_spec((1, 12, 12, 8), wshape, padding=1, groups=groups, layout="NHWC")
        plan = im2row.default_plan(spec, 1)
        assert plan.layout == "NHWC", plan
        assert plan.algorithm in nhwc_algorithms(spec)


def test_nhwc_workspace_counts_what_a_call_allocates(rng):
    """No transposed copies on the NHWC path: a k > 1 layer's scratch stays below its input;
    an NCHW caller of an NHWC plan transposes band by band, within its input too; an NHWC
    caller of an NCHW plan pays both whole copies."""
    x, w, b = make_operands(rng, (1, 56, 56, 64), (64, 64, 3, 3))
    layer = im2row.Conv2d(w, b, padding=1, layout="NHWC", threads=2)
    layer(x)
    assert layer.plan.layout == "NHWC"
    assert 0 < layer.workspace_bytes <= x.nbytes
    copies = x.nbytes + 4 * 64 * 56 * 56
    spec = im2row.make_spec(x.shape, w.shape, padding=1, layout="NHWC")
    nchw_plan = im2row.Plan("rowwise", gemm="packed")
    assert scratch_bytes(spec, nchw_plan, 1) >= copies
    nchw_spec = im2row.make_spec((1, 64, 56, 56), w.shape, padding=1)
    nhwc_plan = im2row.Plan("indirect", layout="NHWC")
    banded = scratch_bytes(nchw_spec, nhwc_plan, 1)
    # each worker holds a band's transposed input rows and output rows
    assert scratch_bytes(spec, nhwc_plan, 1) + 4 * 64 * 56 * 2 <= banded <= x.nbytes
    layer = im2row.Conv2d(w, b, padding=1, plan=nhwc_plan, threads=1)
    layer(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    assert layer.workspace_bytes == banded


# -- views and out= -------------------------------------------------------------------------
def _nhwc_odd_view(rng, n, h, w, c):
    base = rng.uniform(-1, 1, (n + 1, 2 * h + 1, 3 * w, 2 * c + 1)).astype(np.float32)
    return base[1:, 1::2, ::3, 1::2]          # odd strides in every axis, channels too


@pytest.mark.parametrize("algorithm", ["indirect", "rowwise", "depthwise"])
def test_nhwc_views_with_odd_strides(algorithm, isa, rng):
    x = _nhwc_odd_view(rng, 2, 9, 10, 6)
    assert not x.flags.c_contiguous
    groups = 6 if algorithm == "depthwise" else 1
    _, w, b = make_operands(rng, (1, 1, 1, 1), (6, 6 // groups, 3, 3))
    plan = im2row.Plan(algorithm, layout="NHWC", isa=isa)
    y = im2row.conv2d(x, w, b, padding=1, stride=(1, 2), groups=groups, layout="NHWC", plan=plan)
    assert_matches_reference(y, x, w, b, padding=1, stride=(1, 2), groups=groups, layout="NHWC")
    # a reversed (negative-stride) NHWC view
    xr = rng.uniform(-1, 1, (1, 8, 7, 6)).astype(np.float32)[:, ::-1, :, ::-1]
    y = im2row.conv2d(xr, w, b, padding=1, groups=groups, layout="NHWC", plan=plan)
    assert_matches_reference(y, xr, w, b, padding=1, groups=groups, layout="NHWC")


@pytest.mark.parametrize("caller", ["NHWC", "NCHW"])
def test_nhwc_plan_out_argument(caller, rng):
    x, w, b = make_operands(rng, (2, 5, 9, 8), (6, 5, 3, 3))
    if caller == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    expected = reference_pair(x, w, b, padding=1, layout=caller)
    layer = im2row.Conv2d(w, b, padding=1, layout=caller, plan=im2row.Plan("indirect", layout="NHWC"))
    shape = expected[0].shape
    out = np.full(shape, np.nan, np.float32)                 # contiguous: written in place
    assert layer(x, out=out) is out
    assert_matches_reference(out, x, w, b, expected=expected, padding=1, layout=caller)
    big = np.full(shape[:-1] + (2 * shape[-1],), np.nan, np.float32)
    view = big[..., ::2]                                     # strided out view
    assert layer(x, out=view) is view
    assert_matches_reference(view, x, w, b, expected=expected, padding=1, layout=caller)
    assert np.isnan(big[..., 1::2]).all()
    with pytest.raises(ValueError, match="shape"):
        layer(x, out=np.empty(shape[:-1] + (shape[-1] + 1,), np.float32))


def test_nhwc_out_aliasing_input(rng):
    # 1x1 with C == OC: out may be the input itself; the result must still be right
    x, w, b = make_operands(rng, (1, 6, 7, 8), (8, 8, 1, 1))
    expected = reference_pair(x, w, b, layout="NHWC")
    y = im2row.conv2d(x, w, b, layout="NHWC", out=x, plan=im2row.Plan("indirect", layout="NHWC"))
    assert y is x
    assert_matches_reference(x, x, w, b, expected=expected, layout="NHWC")


def test_nhwc_update_repacks_weights_and_bias(rng):
    """The NHWC packs hold the bias: update() of either must reach every prepared shape."""
    x, w, b = make_operands(rng, (1, 7, 8, 4), (6, 4, 3, 3))
    layer = im2row.Conv2d(w, b, padding=1, layout="NHWC", plan=im2row.Plan("rowwise", layout="NHWC"))
    layer(x)
    _, w2, b2 = make_operands(rng, (1, 1, 1, 1), (6, 4, 3, 3))
    layer.update(bias=b2)
    assert_matches_reference(layer(x), x, w, b2, padding=1, layout="NHWC")
    layer.update(weight=w2)
    assert_matches_reference(layer(x), x, w2, b2, padding=1, layout="NHWC")
    no_bias = im2row.Conv2d(w, None, padding=1, layout="NHWC", plan=im2row.Plan("indirect", layout="NHWC"))
    no_bias(x)
    no_bias.update(bias=b)
    assert_matches_reference(no_bias(x), x, w, b, padding=1, layout="NHWC")


def test_dilated_bands_hold_only_the_rows_their_taps_read():
    """An NCHW caller's band transposes the input rows its taps read, not every row between its
    first and last tap: a 3x3 kernel dilated 18 on a 33x33 map holds 3 rows per output row
    (its span is the whole map), so its bands stay a small part of the input's bytes."""
    spec = im2row.make_spec((1, 64, 33, 33), (32, 64, 3, 3), padding=18, dilation=18)
    row = 4 * 64 * 33
    for rows in (1, 2):
        plan = im2row.Plan("indirect", row_block=rows, gemm="packed", layout="NHWC")
        workspace = scratch_bytes(spec, plan, 1)
        assert 3 * rows * row <= workspace < 3 * rows * row + spec.input_bytes // 8


def test_cost_model_counts_only_kernel_rows_inside_the_input():
    """(output row, kernel row) pairs inside the input, a window wholly in the padding counted
    once (its bias): 3x3 dilated 18 on 33 rows reads 2 kernel rows for 30 output rows and 1 for
    3; undilated with padding 1, all but the top and bottom rows' outer kernel rows."""
    from im2row import costmodel
    spec = im2row.make_spec((1, 8, 33, 33), (8, 8, 3, 3), padding=18, dilation=18)
    assert costmodel._inside_row_share(spec) == pytest.approx(63 / 99)
    spec = im2row.make_spec((1, 8, 10, 10), (8, 8, 3, 3), padding=1)
    assert costmodel._inside_row_share(spec) == pytest.approx(28 / 30)
    # 12 rows dilated 9: output rows 0-2 read kernel rows 1-2, rows 3-8 only row 1, 9-11 rows 0-1
    spec = im2row.make_spec((1, 8, 12, 10), (8, 8, 3, 3), padding=(9, 1), dilation=(9, 1))
    assert spec.out_height == 12
    assert costmodel._inside_row_share(spec) == pytest.approx((3 * 2 + 6 * 1 + 3 * 2) / 36)
    # 2 rows dilated 9, padding 10: output rows 0 and 3 have every kernel row in the padding,
    # rows 1 and 2 one kernel row inside
    spec = im2row.make_spec((1, 8, 2, 10), (8, 8, 3, 3), padding=(10, 1), dilation=(9, 1))
    assert spec.out_height == 4
    assert costmodel._inside_row_share(spec) == pytest.approx((1 + 1 + 1 + 1) / 12)


def test_column_runs_only_where_the_taps_saved_outweigh_the_tiles():
    """The indirect driver's calls per stretch of columns (and the cost model's view of them):
    on 33 columns dilated 18, columns 0-14 and 18-32 have 2 kernel columns inside, 15-17 one;
    with 12-pixel tiles (a part-filled tile counted as 6) that is 78 of 99 tap-pixels.  A 3x3
    with padding 1 never splits, nor do 11-column maps in runs of 3-4 pixels."""
    from im2row import _core
    from im2row.plan import core_spec
    wide = im2row.make_spec((1, 8, 33, 33), (8, 8, 3, 3), padding=18, dilation=18)
    assert _core.indirect_column_runs(core_spec(wide), 12) == (3, pytest.approx(78 / 99))
    for spec in (im2row.make_spec((1, 8, 56, 56), (8, 8, 3, 3), padding=1),
                 im2row.make_spec((1, 8, 11, 11), (8, 8, 3, 3), padding=4, dilation=4)):
        assert _core.indirect_column_runs(core_spec(spec), 12) == (0, 1.0)
