"""Shape classes beyond the four original suites: the public suites (Inception-v3, YOLOv2,
SSD-MobileNet, ResNeXt, dilated, DeepBench) and the class suites (WaveNet 1-D, DeepLab,
EfficientNet, ConvNeXt, U-Net, YOLOv3, AlexNet, depthwise multipliers, groups 2-64, first
layers, batch > 1) shipped in im2row/models.

- numerics: every layer, shrunk to a small map and few channels per group (same kernel,
  stride, padding, dilation, group structure), against the float64 reference on every
  algorithm the shape accepts;
- planning at the real shape: the default plan is valid, the cost model's choice is
  deterministic, and k > 1 layers keep the workspace promise (one input image) at 1 and 2
  threads."""
import json
from importlib import resources

import numpy as np
import pytest

import im2row
from im2row import Plan, costmodel
from im2row.plan import budget_bytes, default_candidates, scratch_bytes, valid_algorithms
from conftest import assert_matches_reference, make_operands, reference_pair

pytestmark = pytest.mark.usefixtures("no_tuned_plans")

ORIGINAL = {"resnet50", "vgg19", "vgg16", "mobilenet_v2", "shufflenet"}  # test_layer_suites.py
SUITES = sorted(name for name in im2row.layers.builtin_models() if name not in ORIGINAL)
MAX_SIDE = 20          # map side for numerics (1-D rows keep up to MAX_ROW samples)
MAX_ROW = 300
MAX_GROUP_CHANNELS = 12
MAX_GROUPS = 6


def _load(name):
    return json.loads(resources.files("im2row.models").joinpath(f"{name}.json").read_text())


LAYERS = [layer for name in SUITES for layer in _load(name)]
IDS = [layer["name"] for layer in LAYERS]


def test_class_suites_ship():
    for name in ("wavenet", "deeplab_v3", "efficientnet_b0", "convnext_tiny", "unet", "yolov3",
                 "alexnet", "shape_classes", "googlenet_v3", "yolov2", "ssd_mobilenet",
                 "resnext_101", "dilated", "deepbench_inference_device"):
        assert name in SUITES
        assert im2row.layers.builtin_layers(name)


def _conv(layer):
    return dict(stride=tuple(layer["stride"]), padding=tuple(layer["padding"]),
                dilation=tuple(layer["dilation"]), groups=layer["groups"])


def _shrunk(layer):
    """(input shape, weight shape, conv args) of a small layer of the same class."""
    n, c, h, w = layer["input_shape"]
    groups = layer["groups"]
    cg, ocg = c // groups, layer["out_channels"] // groups
    kh, kw = layer["kernel_size"]
    (ph, pw), (dh, dw) = layer["padding"], layer["dilation"]
    g = min(groups, MAX_GROUPS)
    cg, ocg = min(cg, MAX_GROUP_CHANNELS), min(ocg, MAX_GROUP_CHANNELS)
    side_h = MAX_ROW if w == 1 else MAX_SIDE
    side_w = MAX_ROW if h == 1 else MAX_SIDE
    # keep the dilated kernel inside the padded input
    h = max(min(h, side_h), dh * (kh - 1) + 1 - 2 * ph)
    w = max(min(w, side_w), dw * (kw - 1) + 1 - 2 * pw)
    conv = _conv(layer)
    conv["groups"] = g
    return (min(n, 2), cg * g, h, w), (ocg * g, cg, kh, kw), conv


def _plans(spec):
    """One plan per algorithm the shape accepts (both GEMMs for the GEMM algorithms)."""
    out = []
    for algorithm in valid_algorithms(spec):
        if algorithm == "depthwise":
            out.append(Plan("depthwise"))
            blocks = im2row.plan.dw_block_for_l1(spec)
            if blocks:      # the channel-blocked default, its bands as the default sizes them
                out.append(Plan("depthwise", channel_block=blocks,
                                row_block=im2row.plan.dw_band_rows(spec, blocks)))
        elif algorithm == "rowwise":
            out.append(Plan("rowwise", row_block=2, gemm="packed"))
        elif algorithm == "incremental":
            block = max(1, spec.out_width // 3)
            out += [Plan("incremental", block, 0, 2, gemm=gemm) for gemm in ("packed", "sgemm")]
        else:
            out += [Plan(algorithm, gemm=gemm) for gemm in ("packed", "sgemm")]
    return out


@pytest.mark.parametrize("index", range(len(LAYERS)), ids=IDS)
def test_class_layer_every_algorithm_matches_reference(index):
    x_shape, w_shape, conv = _shrunk(LAYERS[index])
    rng = np.random.default_rng(500 + index)
    x, w, b = make_operands(rng, x_shape, w_shape, bias=index % 2 == 0)
    expected = reference_pair(x, w, b, **conv)
    spec = im2row.make_spec(x_shape, w_shape, **conv)
    plans = _plans(spec) + [None]   # None: the default plan
    for plan in plans:
        y = im2row.Conv2d(w, b, **conv, plan=plan)(x)
        assert_matches_reference(y, x, w, b, expected=expected, **conv)


def _spec(layer):
    return im2row.layers.LayerSpec.from_dict(layer).to_spec()


@pytest.mark.parametrize("threads", [1, 2], ids=lambda t: f"t{t}")
@pytest.mark.parametrize("index", range(len(LAYERS)), ids=IDS)
def test_class_layer_default_plan_within_budget(index, threads):
    layer = LAYERS[index]
    spec = _spec(layer).with_batch(1)
    plan = im2row.default_plan(spec, threads)
    im2row.plan.validate_plan(spec, plan)
    workspace = scratch_bytes(spec, plan, threads)
    assert workspace <= budget_bytes(spec, threads)
    plans = default_candidates(spec, im2row.get_isa(), threads)
    lean = im2row.plan._lean_plan(spec, im2row.get_isa())   # classic, a channel per pass
    leanest = min(scratch_bytes(spec, p, threads) for p in plans + ([lean] if lean else []))
    if leanest <= spec.input_bytes:
        assert workspace <= spec.input_bytes, (layer["name"], plan, workspace, spec.input_bytes)
    else:   # maps so small that the GEMM's row pointers outweigh them: the leanest plan
        assert workspace == leanest


FIXED_HOST = costmodel.Host(isa="avx512", vector=16, gemm_flops=2e11, copy_l2=1e11,
                            copy_l3=5e10, copy_mem=2e10, l1=32 << 10, l2=1 << 20, l3=32 << 20,
                            call_s=5e-6)


@pytest.mark.parametrize("index", range(len(LAYERS)), ids=IDS)
def test_cost_model_choice_valid_and_deterministic(index):
    spec = _spec(LAYERS[index]).with_batch(1)
    candidates = default_candidates(spec, im2row.get_isa(), 1)
    first = costmodel.best_plan(spec, candidates, 1, host_params=FIXED_HOST)
    again = costmodel.best_plan(spec, list(candidates), 1, host_params=FIXED_HOST)
    assert first == again and first in candidates
    im2row.plan.validate_plan(spec, first)
    times = [costmodel.predict(spec, p, 1, FIXED_HOST) for p in candidates]
    assert all(np.isfinite(t) and t > 0 for t in times)
    assert costmodel.predict(spec, first, 1, FIXED_HOST) == min(times)


# -- 1-D convolutions: rows read in place, columns run as rows ---------------------------------

ROW_CASES = [
    # (x shape, weight shape, conv): H = 1 rows (WaveNet-style), 'valid' 2-D, vertical padding
    ((2, 6, 1, 301), (5, 6, 1, 2), dict(dilation=(1, 7))),
    ((1, 3, 1, 97), (4, 3, 1, 5), dict()),
    ((1, 4, 9, 23), (6, 4, 3, 3), dict(padding=(2, 0), dilation=(2, 3))),
    ((3, 6, 7, 12), (8, 3, 2, 4), dict(stride=(2, 1), padding=(1, 0, 3, 0), groups=2)),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: "x".join(map(str, c[0])))
def test_rowwise_reads_unpadded_rows_in_place(case, threads, rng):
    """Unit horizontal stride and no horizontal padding: the row-wise GEMM points at the input
    rows (taps in vertical padding at a zero row), its workspace is a row, not a band."""
    x_shape, w_shape, conv = case
    x, w, b = make_operands(rng, x_shape, w_shape)
    for rows in (0, 1, 2):
        plan = Plan("rowwise", row_block=rows, gemm="packed")
        layer = im2row.Conv2d(w, b, **conv, plan=plan, threads=threads)
        assert_matches_reference(layer(x), x, w, b, **conv)
        assert layer.workspace_bytes < x[0].nbytes // 2
    # the workspace pool's NaN poison must not reach the output through the zero row
    assert np.isfinite(layer(x)).all()


def test_rowwise_in_place_needs_no_zero_row_without_vertical_padding(rng):
    """A 1-D signal (WaveNet's one input channel, 16000 samples): no window reaches above or
    below the row, so row-wise im2row in place keeps no zero row (it would be as large as
    the input and push the plan past the workspace budget); with vertical padding it does."""
    x, w, b = make_operands(rng, (2, 1, 1, 16002), (64, 1, 1, 3))
    spec = im2row.make_spec(x.shape, w.shape)
    plan = Plan("rowwise", gemm="packed")
    assert scratch_bytes(spec, plan, 1) < spec.input_bytes // 8
    assert plan in default_candidates(spec, im2row.get_isa(), 1)
    assert_matches_reference(im2row.Conv2d(w, b, plan=plan)(x), x, w, b)
    padded = im2row.make_spec((1, 1, 3, 500), (4, 1, 3, 2), padding=(1, 0))
    assert scratch_bytes(padded, plan, 1) >= 4 * padded.out_width


COLUMN_CASES = [
    ((2, 5, 211, 1), (6, 5, 2, 1), dict(dilation=(8, 1))),
    ((1, 4, 64, 1), (8, 2, 5, 1), dict(stride=(3, 1), padding=(2, 0, 1, 0), groups=2)),
    ((1, 3, 40, 1), (3, 1, 3, 1), dict(padding="same", groups=3)),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", COLUMN_CASES, ids=lambda c: "x".join(map(str, c[0])))
def test_column_convolution_runs_as_a_row(case, layout, rng):
    """A (C, H, 1) input with an (kh, 1) kernel is planned and run as the (C, 1, H) row it is
    in memory; results, out= and the unbatched form keep the caller's shapes."""
    x_shape, w_shape, conv = case
    x, w, b = make_operands(rng, x_shape, w_shape)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    spec = im2row.make_spec(x.shape, w.shape, layout=layout, **conv)
    row = spec.oriented()
    assert (row.height, row.width, row.kernel_h, row.kernel_w) == (1, spec.height, 1, spec.kernel_h)
    assert (row.out_height, row.out_width) == (1, spec.out_height)
    layer = im2row.Conv2d(w, b, **conv, layout=layout)
    y = layer(x)
    assert_matches_reference(y, x, w, b, layout=layout, **conv)
    assert layer.planned_specs() == [spec.with_batch(1)]     # the caller's shape
    out = np.empty_like(y)
    assert layer(x, out=out) is out
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(layer(x[0]), y[0])
    for plan in (Plan("classic", gemm="packed"), Plan("rowwise", gemm="packed"),
                 Plan("incremental", column_block=7, gemm="sgemm")):
        if plan.algorithm not in valid_algorithms(row):
            continue
        y2 = im2row.conv2d(x, w, b, **conv, layout=layout, plan=plan)
        assert_matches_reference(y2, x, w, b, layout=layout, **conv)


def test_only_columns_are_reoriented():
    spec = im2row.make_spec((1, 3, 30, 1), (4, 3, 3, 1))
    assert spec.is_column and spec.oriented() != spec
    for other in (im2row.make_spec((1, 3, 30, 1), (4, 3, 3, 1), padding=(0, 1)),   # side padding
                  im2row.make_spec((1, 3, 30, 2), (4, 3, 3, 2)),                    # two columns
                  im2row.make_spec((1, 3, 1, 1), (4, 3, 1, 1))):                    # one pixel
        assert other.oriented() is other


def test_column_plans_are_cached_under_their_row_form():
    """tune() stores what the runtime looks up: the row form of a column convolution."""
    from im2row import wisdom
    spec = im2row.make_spec((1, 8, 500, 1), (8, 8, 2, 1), dilation=(4, 1))
    assert wisdom.plan_key(spec, 1, "avx2") == wisdom.plan_key(spec.oriented(), 1, "avx2")


@pytest.mark.parametrize("gemm", ["sgemm", "packed"])
def test_one_layer_serves_columns_and_maps(gemm, rng):
    """A layer with a (kh, 1) kernel sees column inputs (run as rows: kh and kw swap) and
    2-D maps: weight layouts that depend on kw (the ring's rotated copies) are kept apart."""
    x_col, w, b = make_operands(rng, (1, 8, 15, 1), (17, 8, 2, 1))
    x_map = make_operands(rng, (1, 8, 15, 12), (17, 8, 2, 1))[0]
    layer = im2row.Conv2d(w, b, plan=Plan("incremental", column_block=1, gemm=gemm))
    for x in (x_col, x_map, x_col):
        assert_matches_reference(layer(x), x, w, b)


# -- the channels-last GEMM as a default for NCHW callers ------------------------------------

NHWC_FOR_NCHW = [
    # (x shape, weight shape, conv, offered): dense k > 1 with more than 16 input channels
    ((1, 32, 14, 14), (40, 32, 3, 3), dict(padding=1), True),
    ((2, 24, 9, 17), (8, 24, 1, 7), dict(padding=(0, 3)), True),
    ((1, 48, 11, 11), (16, 48, 3, 3), dict(stride=2, dilation=2, padding=(1, 2, 3, 0)), True),
    ((1, 3, 20, 20), (8, 3, 3, 3), dict(padding=1), False),       # a stem
    ((1, 32, 8, 8), (16, 32, 1, 1), dict(), False),               # 1x1: a GEMM in place
    ((1, 32, 8, 8), (16, 8, 3, 3), dict(groups=4), False),        # 8 channels a group
    ((1, 64, 8, 8), (32, 16, 3, 3), dict(groups=4, padding=1), True),   # 16 a group, in L2
    ((1, 64, 96, 96), (32, 16, 3, 3), dict(groups=4), False),     # an input past the L2
]


@pytest.mark.parametrize("case", range(len(NHWC_FOR_NCHW)))
def test_nhwc_candidate_for_nchw_callers(case, monkeypatch):
    """(On a 512 KB L2: grouped layers are offered it only where the input fits.)"""
    monkeypatch.setattr(im2row.hwinfo, "cache_sizes", lambda: {
        "l1d": 32 << 10, "l2": 512 << 10, "l3": 32 << 20})
    x_shape, w_shape, conv, offered = NHWC_FOR_NCHW[case]
    spec = im2row.make_spec(x_shape, w_shape, **conv)
    isa = im2row.get_isa()
    nhwc = [p for p in default_candidates(spec, isa, 1) if p.layout == "NHWC"]
    assert bool(nhwc) == (offered and isa != "scalar")
    for plan in nhwc:
        assert plan.algorithm == "indirect"
        assert np.isfinite(costmodel.predict(spec, plan, 1, FIXED_HOST))
        assert costmodel.predict(spec, plan, 2, FIXED_HOST) < costmodel.predict(spec, plan, 1,
                                                                                FIXED_HOST)
        rng = np.random.default_rng(900 + case)
        x, w, b = make_operands(rng, x_shape, w_shape, bias=True)
        for threads in (1, 2):
            y = im2row.Conv2d(w, b, **conv, plan=plan, threads=threads)(x)
            assert_matches_reference(y, x, w, b, **conv)


def test_cost_model_refuses_plans_it_does_not_describe():
    spec = im2row.make_spec((1, 8, 6, 6), (8, 1, 3, 3), padding=1, groups=8)
    plan = Plan("depthwise", gemm="packed", layout="NHWC")
    assert not costmodel.covers(plan)
    with pytest.raises(ValueError, match="does not describe"):
        costmodel.predict(spec, plan, 1, FIXED_HOST)


def test_cost_model_streams_large_weights_from_far_once_per_panel():
    """Weights past the L2 come from L3 once per B panel of the packed GEMM (its outer loop);
    the panel's other column strips re-read the blocks from L2, not from L3 again."""
    h = FIXED_HOST
    m, k, n, calls = 1024, 4608, 400, 3        # 18.9 MB of weights: past L2, within L3
    a_bytes = 4.0 * m * k
    assert h.l2 < a_bytes <= h.l3
    strips = costmodel._strips(h, n, False)
    panels = -(-n // costmodel._panel_columns(h.isa, h.l1, h.l2, h.l3, m, n, k))
    assert 1 <= panels < strips
    _, near, far, b_reads = costmodel._gemm_terms(h, m, n, k, calls, 4.0 * k * n)
    assert far == pytest.approx(calls * panels * a_bytes / h.copy_l3)
    assert near == pytest.approx(calls * (strips - panels) * a_bytes / h.copy_l2)
    assert b_reads > 0
    # weights within the L2: no far term, every strip re-reads the block from L2
    m, k = 64, 576
    _, near, far, _ = costmodel._gemm_terms(h, m, n, k, calls, 4.0 * k * n)
    assert far == 0.0 and near == pytest.approx(calls * strips * 4.0 * m * k / h.copy_l2)
    # a block within the L1: re-read from there at the tiles' load rate, no streaming term
    _, near, far, _ = costmodel._gemm_terms(h, 16, n, 64, calls, 4.0 * 64 * n)
    assert near == far == 0.0
    # the re-reads add to the arithmetic; the patch reads (prefetched) overlap it
    compute, near, far, b_reads = costmodel._gemm_terms(h, 1024, n, 4608, calls, 4.0 * 4608 * n)
    assert costmodel._gemm_seconds(h, 1024, n, 4608, calls, 4.0 * 4608 * n) == pytest.approx(
        max(compute + near + far, b_reads))


def test_cost_model_narrow_strips_wait_for_streamed_weights():
    """The m-vectorised tile loads a vector of A per panel for a strip's few columns: past the
    L1 its rate is bound by the A block's level, a one-column strip more than a six-column one."""
    h = FIXED_HOST
    m = 192
    in_l1 = costmodel._column_time(h, m, 17, a_block=16 << 10)
    streamed = costmodel._column_time(h, m, 17, a_block=512 << 10)
    assert streamed > in_l1
    whole = costmodel._column_time(h, m, 16, a_block=512 << 10)
    assert whole == costmodel._column_time(h, m, 16, a_block=16 << 10)   # n-tiles: no wait
    one = (streamed - whole) / 1
    six = (costmodel._column_time(h, m, 22, a_block=512 << 10) - whole) / 6
    assert one > six


# -- depthwise by channel blocks: the default's block and band sizes ----------------------------

DW_BLOCK_CASES = [
    # (C, side, kernel, stride): small maps with many channels, 56-150 maps at stride 1 and 2
    (960, 7, 3, 1), (576, 14, 3, 2), (480, 14, 5, 1), (768, 7, 7, 1),
    (144, 56, 3, 1), (96, 112, 3, 2), (64, 150, 3, 2), (32, 112, 3, 1), (24, 300, 5, 2),
]


@pytest.mark.parametrize("case", DW_BLOCK_CASES, ids=lambda c: "c{}-{}x{}-k{}-s{}".format(
    c[0], c[1], c[1], c[2], c[3]))
def test_depthwise_default_blocks_and_bands_fit_the_caches(case, monkeypatch):
    """The channel block: whole vectors of channels whose input rows under one output row fit
    half the L1 (at least one vector); the band: every row where a block's input and output fit
    half the L2, else the most rows whose band does (at least one).  Checked on two cache
    hierarchies, so the sizes follow the host's caches and no constant."""
    channels, side, kernel, stride = case
    spec = im2row.make_spec((1, channels, side, side), (channels, 1, kernel, kernel),
                            stride=stride, padding=kernel // 2, groups=channels)
    for l1, l2 in ((32 << 10, 512 << 10), (48 << 10, 2 << 20)):
        monkeypatch.setattr(im2row.hwinfo, "cache_sizes", lambda l1=l1, l2=l2: {
            "l1d": l1, "l2": l2, "l3": 32 << 20})
        blocks = im2row.plan.dw_block_for_l1(spec)
        under_row = 4 * kernel * spec.width
        assert blocks == channels or blocks % 16 == 0
        assert blocks >= min(16, channels)
        if blocks > 16:
            assert blocks * under_row <= l1 // 2
        if blocks < channels:
            assert (blocks + 16) * under_row > l1 // 2
        rows = im2row.plan.dw_band_rows(spec, blocks)

        def band_bytes(r):
            return 4 * blocks * (im2row.plan.band_span(spec, r) * spec.width + r * spec.out_width)

        whole = 4 * blocks * (spec.height * spec.width + spec.out_height * spec.out_width)
        if rows == 0:
            assert whole <= l2 // 2
        else:
            assert 1 <= rows < spec.out_height
            assert rows == 1 or band_bytes(rows) <= l2 // 2
            assert band_bytes(rows + 1) > l2 // 2
        plan = Plan("depthwise", channel_block=blocks, row_block=rows)
        assert plan in default_candidates(spec, "avx2", 1)
        one, two = (costmodel.predict(spec, plan, t, FIXED_HOST) for t in (1, 2))
        assert np.isfinite(one) and two < one


@pytest.mark.parametrize("case", DW_BLOCK_CASES, ids=lambda c: "c{}-{}x{}-k{}-s{}".format(
    c[0], c[1], c[1], c[2], c[3]))
def test_depthwise_default_weighs_doublings_of_the_l1_block(case):
    """The default's channel blocks: the L1 block, then doublings up to every channel, each
    with its own band, all default candidates."""
    channels, side, kernel, stride = case
    spec = im2row.make_spec((1, channels, side, side), (channels, 1, kernel, kernel),
                            stride=stride, padding=kernel // 2, groups=channels)
    blocks = im2row.plan.dw_default_blocks(spec)
    assert blocks[0] == im2row.plan.dw_block_for_l1(spec)
    assert blocks[-1] == channels
    assert all(b == min(2 * a, channels) for a, b in zip(blocks, blocks[1:]))
    candidates = default_candidates(spec, "avx2", 1)
    for b in blocks:
        assert Plan("depthwise", channel_block=b,
                    row_block=im2row.plan.dw_band_rows(spec, b)) in candidates
        assert b in im2row.plan.plan_space(spec)["channel_block"]


def _band_calls_by_pixels(h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, band):
    """_depthwise_band's work counted pixel by pixel: a pixel's taps inside the input, whether
    its column is interior (every tap inside the row), and the calls: one per band row with
    interior columns, one per edge column and stretch of band rows whose inside kernel rows
    are the same set."""
    def rows_in(y):
        return frozenset(i for i in range(kh) if 0 <= y * sh - pt + i * dh < h)

    def cols_in(x):
        return frozenset(j for j in range(kw) if 0 <= x * sw - pl + j * dw < w)

    interior_cols = [x for x in range(ow) if len(cols_in(x)) == kw]
    fmas = sum(len(rows_in(y)) * len(cols_in(x)) for y in range(oh) for x in range(ow))
    interior = sum(len(rows_in(y)) * kw for y in range(oh) for x in interior_cols)
    calls = pointers = 0
    for y0 in range(0, oh, band):
        ys = range(y0, min(y0 + band, oh))
        if interior_cols:
            calls += len(ys)
            pointers += len(ys) * kh * kw
        for x in range(ow):
            if x in interior_cols:
                continue
            pointers += len(ys) * kh * kw
            calls += 1 + sum(1 for a, b in zip(ys, ys[1:]) if rows_in(a) != rows_in(b))
    return {"fmas": float(fmas), "interior": float(interior), "calls": calls,
            "pointers": pointers}


@pytest.mark.parametrize("seed", range(40))
def test_depthwise_band_cost_counts_the_band_work(seed):
    """The cost model's count of the channel-blocked path's taps, calls and pointers
    (costmodel._dw_taps) against a pixel-by-pixel count, on random small geometries with
    padding past the kernel, dilation and strides."""
    rng = np.random.default_rng(seed)
    kh, kw = (int(v) for v in rng.integers(1, 8, size=2))
    sh, sw, dh, dw = (int(v) for v in rng.integers(1, 4, size=4))
    pt, pl = (int(v) for v in rng.integers(0, 9, size=2))
    h, w = (int(v) for v in rng.integers(1, 16, size=2))
    oh = (h + 2 * pt - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pl - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        pytest.skip("no output")
    band = int(rng.integers(1, oh + 1))
    got = costmodel._dw_taps(h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, band)
    assert got == _band_calls_by_pixels(h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, band)


@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (7, 7), (1, 7), (4, 2), (6, 1)])
def test_planar_stride_two_depthwise_reads_the_plane(kernel, isa, rng):
    """Stride-2 planar depthwise (f32-dwconv-s2, the phase split in registers) on every ISA:
    no workspace, and the reference's result on maps whose widths leave every tail of a
    vector, with padding up to past the kernel and a channel multiplier."""
    kh, kw = kernel
    for height, width, pads in ((9, 37, (kh // 2, kw // 2)), (8, 16, (0, 0)), (3, 3, (kh, kw)),
                                (1, 21, (0, kw // 2))):
        if height + 2 * pads[0] < kh:
            continue
        x_shape, w_shape = (2, 4, height, width), (8, 1, kh, kw)
        conv = dict(stride=2, padding=pads, groups=4)
        spec = im2row.make_spec(x_shape, w_shape, **conv)
        plan = Plan("depthwise")
        assert scratch_bytes(spec, plan, 1) == 0
        x, w, b = make_operands(rng, x_shape, w_shape)
        y = im2row.conv2d(x, w, b, plan=plan, **conv)
        assert_matches_reference(y, x, w, b, **conv)


@pytest.mark.parametrize("threads", [1, 2])
def test_single_row_layers_plan_no_column_classes(threads):
    """WaveNet's 1-D layers (a row, or a column run as one): rowwise is one GEMM of the whole
    row; the incremental classes of it store C a float at a time (strided columns) and
    measured 1.5-7x slower, at 2 threads too, where the model used to pick them.  The model
    itself now charges those transposed stores."""
    for x_shape, w_shape, conv in (((1, 1, 1, 16002), (64, 1, 1, 3), {}),
                                   ((1, 32, 1, 32768), (32, 32, 1, 2), {}),
                                   ((1, 128, 16000, 1), (128, 128, 2, 1), dict(dilation=(8, 1)))):
        spec = im2row.make_spec(x_shape, w_shape, **conv)
        plans = default_candidates(spec, im2row.get_isa(), threads)
        assert not [p for p in plans if p.algorithm == "incremental"], plans
    if im2row.get_isa() != "scalar":
        spec = im2row.make_spec((1, 1, 1, 16002), (64, 1, 1, 3))
        classes = costmodel.predict(spec, Plan("incremental", 2000, gemm="packed"), 1)
        row = costmodel.predict(spec, Plan("rowwise", gemm="packed"), 1)
        assert classes > 3 * row, (classes, row)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("x_shape,w_shape,conv", [
    ((1, 5, 1, 203), (7, 5, 1, 2), {}),                                 # WaveNet-like row
    ((2, 3, 1, 100), (4, 3, 1, 3), dict(dilation=(1, 4))),              # batch < threads x 2
    ((1, 4, 1, 61), (6, 4, 3, 3), dict(padding=(1, 0))),                # zero rows above, below
    ((1, 6, 150, 1), (5, 6, 2, 1), dict(dilation=(8, 1))),              # a column, run as a row
])
def test_single_band_rowwise_splits_the_row_among_threads(x_shape, w_shape, conv, threads, rng,
                                                         monkeypatch):
    """Rowwise on the input itself with fewer bands than threads (a 1-D layer is one band):
    each thread takes a piece of the width (whole lines of output, the last one short)."""
    monkeypatch.setattr(im2row.plan, "MIN_WORK_PER_THREAD", 1)    # small shapes use threads too
    x, w, b = make_operands(rng, x_shape, w_shape)
    plan = Plan("rowwise", gemm="packed")
    y = im2row.Conv2d(w, b, plan=plan, threads=threads, **conv)(x)
    assert_matches_reference(y, x, w, b, **conv)
