"""Every algorithm on every shape it accepts (plan.valid_algorithms), forced through
Plan(algorithm, column_block, channel_block, gemm, isa): both GEMM backends, every available
ISA, and for 'incremental' column blocks of 1, a middle value and >= the output width, times
every channel block of the plan space."""
import numpy as np
import pytest

import im2row
from im2row.plan import channel_blocks, column_blocks, row_blocks, valid_algorithms
from conftest import ISAS, assert_matches_reference, make_operands, reference_pair

pytestmark = pytest.mark.usefixtures("no_tuned_plans")

# name: (x shape NCHW, weight shape, conv arguments).  Chosen to reach each branch of the
# incremental schedule: ring rotation sw/dw (1, 2, 3, none), stride phases sh > 1, dilation,
# column classes that do not divide the output width, padding on every side.
SHAPES = {
    "3x3-s1-p1": ((2, 5, 9, 11), (7, 5, 3, 3), dict(padding=1)),
    "3x3-s2-p1": ((2, 4, 12, 13), (6, 4, 3, 3), dict(stride=2, padding=1)),
    "3x3-s2-d2": ((1, 3, 15, 16), (4, 3, 3, 3), dict(stride=2, padding=2, dilation=2)),
    "3x3-s1-d2": ((1, 3, 11, 12), (5, 3, 3, 3), dict(padding=(0, 1, 2, 3), dilation=2)),
    "3x3-s3-p0": ((2, 3, 14, 17), (4, 3, 3, 3), dict(stride=3)),
    "5x5-s3-p2": ((1, 4, 16, 19), (5, 4, 5, 5), dict(stride=3, padding=2)),
    "5x5-s1-same": ((1, 6, 10, 9), (8, 6, 5, 5), dict(padding="same")),
    "7x7-s2-p3": ((1, 3, 21, 18), (8, 3, 7, 7), dict(stride=2, padding=3)),
    "7x7-s1-d3": ((1, 2, 24, 25), (3, 2, 7, 7), dict(padding=3, dilation=3)),
    "1x7-s1-p03": ((2, 4, 6, 15), (5, 4, 1, 7), dict(padding=(0, 3))),
    "7x1-s2-p30": ((1, 4, 17, 6), (5, 4, 7, 1), dict(stride=2, padding=(3, 0))),
    "2x3-asym": ((2, 5, 9, 10), (6, 5, 2, 3), dict(padding=(1, 0, 0, 2))),
    "2x3-s21-d12": ((1, 3, 12, 14), (4, 3, 2, 3), dict(stride=(2, 1), padding=1, dilation=(1, 2))),
    "3x3-s13": ((1, 3, 9, 22), (4, 3, 3, 3), dict(stride=(1, 3), padding=(2, 1, 0, 1))),
    "1x4-s19-d13": ((1, 3, 5, 40), (2, 3, 1, 4), dict(stride=(1, 9), padding=(0, 3), dilation=(1, 3))),
    "3x3-s4": ((1, 3, 17, 18), (4, 3, 3, 3), dict(stride=4, padding=1)),
    "3x3-g2": ((2, 6, 9, 8), (8, 3, 3, 3), dict(padding=1, groups=2)),
    "3x3-g3-s2": ((1, 9, 10, 11), (6, 3, 3, 3), dict(stride=2, padding=1, groups=3)),
    "5x5-full-window": ((1, 3, 5, 5), (4, 3, 5, 5), dict()),
    "3x3-ow1": ((1, 3, 8, 3), (4, 3, 3, 3), dict()),
    "3x3-oh1": ((1, 3, 3, 9), (4, 3, 3, 3), dict(stride=(1, 2))),
    "3x3-oc40": ((1, 5, 9, 13), (40, 5, 3, 3), dict(padding=1)),
    "5x5-s2-oc33": ((2, 3, 13, 12), (33, 3, 5, 5), dict(stride=2, padding=(2, 1, 0, 2))),
    "3x3-g2-oc70": ((1, 4, 8, 11), (140, 2, 3, 3), dict(padding=1, groups=2)),
    "2x3-d2-oc48": ((1, 6, 10, 12), (48, 6, 2, 3), dict(stride=(1, 2), dilation=2)),
    "1x1-s1": ((2, 8, 7, 9), (6, 8, 1, 1), dict()),
    "1x1-s2": ((2, 8, 9, 10), (6, 8, 1, 1), dict(stride=2)),
    "1x1-s12": ((1, 5, 7, 11), (3, 5, 1, 1), dict(stride=(1, 2))),
    "1x1-p1": ((1, 5, 6, 7), (4, 5, 1, 1), dict(padding=1)),
    "1x1-p-asym": ((1, 5, 6, 7), (4, 5, 1, 1), dict(padding=(0, 0, 1, 2))),
    "1x1-g4": ((2, 8, 7, 7), (12, 2, 1, 1), dict(groups=4)),
    "1x1-d2": ((1, 4, 6, 6), (3, 4, 1, 1), dict(dilation=2)),
    "dw3x3-s1": ((2, 6, 9, 10), (6, 1, 3, 3), dict(padding=1, groups=6)),
    "dw3x3-s2": ((1, 8, 11, 12), (8, 1, 3, 3), dict(stride=2, padding=1, groups=8)),
    "dw3x3-x2": ((1, 5, 9, 8), (10, 1, 3, 3), dict(padding=1, groups=5)),
    "dw5x5-d2": ((1, 4, 14, 15), (4, 1, 5, 5), dict(padding=2, dilation=2, groups=4)),
    "dw7x7-s1": ((2, 3, 21, 37), (3, 1, 7, 7), dict(padding=3, groups=3)),
    "dw7x7-s2-x2": ((1, 2, 20, 19), (4, 1, 7, 7), dict(stride=2, padding=(3, 2, 1, 3), groups=2)),
    "dw3x3-s3-asym": ((1, 4, 13, 14), (12, 1, 3, 3), dict(stride=(3, 2), padding=(0, 2, 1, 0), groups=4)),
    "dw7x1-d31": ((1, 3, 20, 9), (3, 1, 7, 1), dict(padding=(3, 0), dilation=(3, 1), groups=3)),
    "dw1x1": ((1, 6, 5, 7), (6, 1, 1, 1), dict(groups=6)),
    "dw1x1-s2-x2": ((1, 3, 8, 9), (6, 1, 1, 1), dict(stride=2, groups=3)),
    "dw2x3-same": ((2, 4, 7, 9), (4, 1, 2, 3), dict(padding="same", groups=4)),
}


def _spec(name):
    x_shape, w_shape, conv = SHAPES[name]
    return im2row.make_spec(x_shape, w_shape, **conv)


def _column_block_choices(spec):
    ow = spec.out_width
    return sorted({1, max(1, (ow + 1) // 2), ow, ow + 5})


def _incremental_variants(spec):
    """(column_block, channel_block, row_block) triples: every column-block choice whole, and
    every channel block and row band of the plan space at a middle column block, plus one
    plan that combines the three."""
    mid = max(1, (spec.out_width + 1) // 2)
    variants = [(cb, 0, 0) for cb in _column_block_choices(spec)]
    variants += [(mid, ch, 0) for ch in channel_blocks(spec) if ch]
    variants += [(mid, 0, rb) for rb in row_blocks(spec) if rb]
    variants.append((1, channel_blocks(spec)[-1], row_blocks(spec)[-1]))
    return list(dict.fromkeys(variants))


def _cases():
    for name in SHAPES:
        spec = _spec(name)
        for algorithm in valid_algorithms(spec):
            gemms = {"depthwise": ["sgemm"], "rowwise": ["packed"]}.get(algorithm,
                                                                         ["sgemm", "packed"])
            if algorithm == "incremental":
                variants = _incremental_variants(spec)
            elif algorithm == "rowwise":   # every band height of the plan space
                variants = [(0, 0, rb) for rb in row_blocks(spec)]
            elif algorithm == "depthwise":   # planes, and channel blocks (multiplier 1 only)
                c = spec.in_channels         # in bands of 1, 2 and all-but-one output rows
                variants = [(0, ch, 0) for ch in sorted({0, 2, max(c - 1, 2), c, c + 4})]
                variants += [(0, ch, rb) for ch in (2, c) for rb in row_blocks(spec)
                             if rb in (1, 2, spec.out_height - 1)]
            elif algorithm == "classic":   # input-channel passes: 1, a split, a short last one
                cg = spec.group_in_channels
                variants = [(0, ch, 0) for ch in sorted({0, 1, 2, max(cg - 1, 1), cg, cg + 3})]
            else:
                variants = [(0, 0, 0)]
            for block, channels, rows in variants:
                for gemm in gemms:
                    tag = algorithm
                    if algorithm == "incremental":
                        tag += f"-cb{block}" + (f"-ch{channels}" if channels else "")
                    elif channels:
                        tag += f"-ch{channels}"
                    tag += f"-rb{rows}" if rows else ""
                    yield pytest.param(name, algorithm, block, channels, rows, gemm,
                                       id=f"{name}-{tag}-{gemm}")


@pytest.fixture(scope="module")
def operands():
    """Inputs and reference results per shape, computed once for all plans and ISAs."""
    rng = np.random.default_rng(20240611)
    cache = {}

    def get(name):
        if name not in cache:
            x_shape, w_shape, conv = SHAPES[name]
            x, w, b = make_operands(rng, x_shape, w_shape, bias=len(cache) % 3 != 1)
            cache[name] = (x, w, b, conv, reference_pair(x, w, b, **conv))
        return cache[name]

    return get


@pytest.mark.parametrize("plan_isa", ISAS)
@pytest.mark.parametrize("name,algorithm,column_block,channel_block,row_block,gemm",
                         list(_cases()))
def test_forced_plan(name, algorithm, column_block, channel_block, row_block, gemm, plan_isa,
                     operands):
    x, w, b, conv, expected = operands(name)
    plan = im2row.Plan(algorithm=algorithm, column_block=column_block,
                       channel_block=channel_block, row_block=row_block, gemm=gemm,
                       isa=plan_isa)
    layer = im2row.Conv2d(w, b, **conv, plan=plan)
    y = layer(x)
    assert_matches_reference(y, x, w, b, expected=expected, **conv)
    assert layer.plan == plan
    # the functional form honours the plan too
    y2 = im2row.conv2d(x, w, b, **conv, plan=plan)
    np.testing.assert_array_equal(y2, y)


def test_every_shape_offers_the_general_algorithms():
    for name in SHAPES:
        spec = _spec(name)
        algos = valid_algorithms(spec)
        assert algos[0] == "incremental" and "classic" in algos, name
        assert ("rowwise" in algos) == (spec.group_in_channels > 1 or spec.groups == 1), name
        assert ("pointwise" in algos) == spec.is_pointwise, name
        assert ("depthwise" in algos) == (spec.groups > 1 and spec.group_in_channels == 1), name
        assert set(algos) <= set(im2row.plan_space(spec)["algorithm"]), name


@pytest.mark.parametrize("gemm", ["sgemm", "packed"])
@pytest.mark.parametrize("name", ["3x3-s2-p1", "5x5-s3-p2", "1x4-s19-d13", "3x3-s2-d2", "3x3-g3-s2",
                                  "5x5-s2-oc33"])
def test_incremental_whole_plan_space(name, gemm, operands):
    """Every column block x row band x channel block of the plan space, on the active ISA."""
    x, w, b, conv, expected = operands(name)
    spec = _spec(name)
    space = im2row.plan_space(spec)
    blocks = column_blocks(spec)
    assert blocks == space["column_block"]
    assert blocks[0] == 1 and blocks[-1] == spec.out_width
    assert space["row_block"][0] == 0 and space["channel_block"][0] == 0
    for block in blocks:
        for rows in space["row_block"]:
            for channels in space["channel_block"]:
                plan = im2row.Plan(algorithm="incremental", column_block=block,
                                   channel_block=channels, row_block=rows, gemm=gemm)
                y = im2row.conv2d(x, w, b, **conv, plan=plan)
                try:
                    assert_matches_reference(y, x, w, b, expected=expected, **conv)
                except AssertionError as exc:
                    raise AssertionError(f"{plan}: {exc}") from None


@pytest.mark.parametrize("algorithm", ["incremental", "classic", "pointwise", "depthwise"])
@pytest.mark.parametrize("gemm", ["sgemm", "packed"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_forced_plan_batch_and_layout(algorithm, gemm, layout, rng):
    # 1x1 depthwise with channel multiplier 2: every algorithm accepts it
    c, conv = 6, dict(stride=(2, 1), padding=(1, 0, 0, 1), groups=6)
    shape = (3, c, 7, 9) if layout == "NCHW" else (3, 7, 9, c)
    x, w, b = make_operands(rng, shape, (12, 1, 1, 1))
    plan = im2row.Plan(algorithm=algorithm, column_block=2 if algorithm == "incremental" else 0,
                       gemm=gemm)
    y = im2row.conv2d(x, w, b, **conv, layout=layout, plan=plan)
    assert_matches_reference(y, x, w, b, layout=layout, **conv)
    y0 = im2row.conv2d(x[:0], w, b, **conv, layout=layout, plan=plan)
    assert y0.shape == (0,) + y.shape[1:]


@pytest.mark.parametrize("algorithm", ["classic", "pointwise", "rowwise"])
def test_large_vertical_stride_non_incremental(algorithm, rng):
    """Only the incremental schedule is limited to vertical strides <= 64."""
    x, w, b = make_operands(rng, (1, 2, 150, 20), (3, 2, 1, 1))
    y = im2row.conv2d(x, w, b, stride=(70, 1), plan=im2row.Plan(algorithm=algorithm,
                                                                gemm="packed"))
    assert_matches_reference(y, x, w, b, stride=(70, 1))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("row_block", [0, 1, 2, 5])
def test_rowwise_batch_layout_and_bands(layout, row_block, rng):
    """Row-wise im2row: bands (incl. a last short one), batch 0/3, strides and dilation that
    split rows into phases, groups, channels-last."""
    conv = dict(stride=(2, 3), padding=(2, 1, 0, 3), dilation=(1, 2), groups=2)
    shape = (3, 6, 13, 17) if layout == "NCHW" else (3, 13, 17, 6)
    x, w, b = make_operands(rng, shape, (8, 3, 3, 4))
    plan = im2row.Plan(algorithm="rowwise", row_block=row_block, gemm="packed")
    y = im2row.conv2d(x, w, b, **conv, layout=layout, plan=plan)
    assert_matches_reference(y, x, w, b, layout=layout, **conv)
    y0 = im2row.conv2d(x[:0], w, b, **conv, layout=layout, plan=plan)
    assert y0.shape == (0,) + y.shape[1:]


@pytest.mark.parametrize("gemm", ["sgemm", "packed"])
@pytest.mark.parametrize("parallel", ["split", "shared"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("channel_block", [1, 4, 5, 7])
def test_classic_input_passes_threads_and_batch(channel_block, threads, parallel, gemm, rng):
    """Classic in passes of input channels: every pass's GEMM adds into the output (bias
    once), threads split images or the output channels of one image, groups, batch 0/1/3."""
    conv = dict(stride=(2, 1), padding=(1, 2, 0, 1), dilation=(1, 2), groups=2)
    x, w, b = make_operands(rng, (3, 14, 9, 11), (40, 7, 3, 2))
    plan = im2row.Plan(algorithm="classic", channel_block=channel_block, gemm=gemm,
                       parallel=parallel)
    for batch in (3, 1):
        y = im2row.conv2d(x[:batch], w, b, **conv, plan=plan, threads=threads)
        assert_matches_reference(y, x[:batch], w, b, **conv)
    y0 = im2row.conv2d(x[:0], w, b, **conv, plan=plan, threads=threads)
    assert y0.shape == (0,) + y.shape[1:]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("channel_block,row_block", [(2, 0), (16, 0), (23, 0), (16, 1), (5, 3)])
def test_depthwise_channel_blocks_threads_batch_and_bias_updates(channel_block, row_block,
                                                                 threads, rng):
    """Depthwise vectorised across channel blocks (whole maps and bands of rows, the tasks
    split over threads): bias packed with the weights, so update() of either (and a bias given
    only later) reaches every prepared shape; batch 0/1/3."""
    conv = dict(stride=(2, 1), padding=(3, 1, 2, 2), dilation=(1, 2), groups=23)
    x, w, b = make_operands(rng, (3, 23, 9, 8), (23, 1, 5, 3))
    plan = im2row.Plan("depthwise", channel_block=channel_block, row_block=row_block)
    layer = im2row.Conv2d(w, None, **conv, plan=plan, threads=threads)
    for batch in (3, 1):
        assert_matches_reference(layer(x[:batch]), x[:batch], w, None, **conv)
    assert layer(x[:0]).shape[0] == 0
    layer.update(bias=b)
    assert_matches_reference(layer(x), x, w, b, **conv)
    w2, b2 = -w, b[::-1].copy()
    layer.update(weight=w2)
    assert_matches_reference(layer(x), x, w2, b, **conv)
    layer.update(bias=b2)
    assert_matches_reference(layer(x[:1]), x[:1], w2, b2, **conv)


def test_classic_passes_keep_their_own_packed_weights(rng):
    """One layer, two classic plans that pack weights differently (whole K / per pass): each
    shape gets the layout its plan reads, also after update()."""
    from im2row._api import _pack_format
    kernels = im2row.hwinfo.kernel_set(im2row.hwinfo.get_isa())
    whole = im2row.Plan("classic", gemm="packed")
    passes = im2row.Plan("classic", channel_block=3, gemm="packed")
    x, w, b = make_operands(rng, (1, 8, 6, 7), (5, 8, 3, 3))
    spec = im2row.make_spec(x.shape, w.shape, padding=1)
    assert _pack_format(whole, kernels, spec) != _pack_format(passes, kernels, spec)
    for plan in (whole, passes, whole):
        layer = im2row.Conv2d(w, b, padding=1, plan=plan)
        assert_matches_reference(layer(x), x, w, b, padding=1)
        w2 = w[::-1].copy()
        layer.update(weight=w2)
        assert_matches_reference(layer(x), x, w2, b, padding=1)


def test_rowwise_needs_the_packed_gemm():
    x, w = np.zeros((1, 2, 6, 6), np.float32), np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="rowwise.*packed"):
        im2row.conv2d(x, w, plan=im2row.Plan("rowwise", gemm="sgemm"))


# -- GEMM edges ------------------------------------------------------------------------------------
# A 1x1 convolution of a (1, k, 1, n) input with (m, k, 1, 1) weights is exactly one GEMM
# C (m x n) = W (m x k) @ X (k x n): drive the packed kernels through their register-tile and
# cache-block edges (panel height 4/8/16, 16-column vectors and their tails, k slices of 512,
# m blocks of 256).
GEMM_MN = [(m, n) for m in (1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 33, 64)
           for n in (1, 2, 5, 12, 13, 15, 16, 17, 29, 32, 33, 47, 48, 49, 64, 65, 97)]
GEMM_K = [(m, n, k) for m, n in [(16, 48), (17, 33), (5, 13), (40, 64)]
          for k in (1, 2, 511, 512, 513, 1030)]
GEMM_BIG_M = [(m, n, 19) for m in (255, 256, 257, 520) for n in (16, 23, 49)]


def _gemm_case(rng, m, n, k):
    x, w, b = make_operands(rng, (1, k, 1, n), (m, k, 1, 1), bias=(m + n) % 2 == 0)
    return x, w, b


@pytest.mark.parametrize("plan_isa", ISAS)
@pytest.mark.parametrize("m,n", GEMM_MN, ids=[f"m{m}-n{n}" for m, n in GEMM_MN])
def test_packed_gemm_tile_edges(m, n, plan_isa, rng):
    x, w, b = _gemm_case(rng, m, n, 37)
    y = im2row.conv2d(x, w, b, plan=im2row.Plan(algorithm="pointwise", gemm="packed", isa=plan_isa),
                      threads=1)
    assert_matches_reference(y, x, w, b)


@pytest.mark.parametrize("plan_isa", ISAS)
@pytest.mark.parametrize("m,n,k", GEMM_K + GEMM_BIG_M,
                         ids=[f"m{m}-n{n}-k{k}" for m, n, k in GEMM_K + GEMM_BIG_M])
def test_packed_gemm_block_edges(m, n, k, plan_isa, rng):
    x, w, b = _gemm_case(rng, m, n, k)
    for algorithm in ("pointwise", "classic"):
        y = im2row.conv2d(x, w, b, plan=im2row.Plan(algorithm=algorithm, gemm="packed", isa=plan_isa),
                          threads=1)
        assert_matches_reference(y, x, w, b)


@pytest.mark.parametrize("width", [1, 7, 8, 9, 17])
@pytest.mark.parametrize("channels,channel_block", [(3, 2), (9, 8), (33, 16), (40, 40)])
def test_depthwise_channel_blocks_edge_transposes(width, channels, channel_block, isa, rng):
    """The channel-blocked path's transposes on every ISA: input and output rows of 1-17 pixels
    against blocks of 2-40 channels, a short last block included (the SIMD transposes' 8 x 8
    blocks, their masked edges, the scalar variant), padding wider than the row, stride 1 and 2,
    whole maps and bands of one and two output rows (bands wholly in the padding included)."""
    for conv in (dict(stride=1, padding=(1, 3, 2, 4)), dict(stride=2, padding=1),
                 dict(stride=2, padding=(4, 1, 3, 1))):
        x, w, b = make_operands(rng, (2, channels, 5, width), (channels, 1, 3, 3))
        for row_block in (0, 1, 2):
            plan = im2row.Plan("depthwise", channel_block=channel_block, row_block=row_block)
            y = im2row.conv2d(x, w, b, **conv, groups=channels, plan=plan)
            assert_matches_reference(y, x, w, b, **conv, groups=channels)
