"""Property test: random valid convolutions (shape, padding form, groups, layout, batch, plan
and its internal layout, ISA, threads) agree with the float64 reference."""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import im2row  # noqa: E402
from im2row.plan import LAYOUTS, channel_blocks, row_blocks, valid_algorithms  # noqa: E402
from conftest import ISAS, assert_matches_reference  # noqa: E402
from reference import explicit_padding  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_tuned_plans")


@st.composite
def convolutions(draw):
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    if kind == "dense":
        groups, cg = 1, draw(st.integers(1, 9))
        oc = draw(st.one_of(st.integers(1, 10), st.integers(11, 40)))
    elif kind == "grouped":
        groups, cg = draw(st.integers(2, 4)), draw(st.integers(1, 4))
        oc = groups * draw(st.integers(1, 3))
    else:
        groups, cg = draw(st.integers(2, 9)), 1
        oc = groups * draw(st.integers(1, 3))
    c = cg * groups
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad_kind = draw(st.sampled_from(["int", "pair", "quad", "valid", "same"]))
    if pad_kind == "same" and (sh, sw) != (1, 1):
        pad_kind = "valid"
    if pad_kind == "int":
        padding = draw(st.integers(0, 3))
    elif pad_kind == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    elif pad_kind == "quad":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(4))
    else:
        padding = pad_kind
    top, left, bottom, right = explicit_padding(padding, (kh, kw), (dh, dw))
    min_h = max(1, dh * (kh - 1) + 1 - top - bottom)
    min_w = max(1, dw * (kw - 1) + 1 - left - right)
    h = draw(st.integers(min_h, min_h + 12))
    w = draw(st.integers(min_w, min_w + 12))
    if kw == 1 and left == right == 0 and draw(st.booleans()):
        w = 1                             # a column convolution (run as a row)
    batch = draw(st.integers(0, 3))
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    unbatched = batch == 1 and draw(st.booleans())
    conv = dict(stride=(sh, sw), padding=padding, dilation=(dh, dw), groups=groups)
    spec = im2row.make_spec((1, c, h, w), (oc, cg, kh, kw), **conv)
    plan = None
    if draw(st.booleans()):
        plan_layout = draw(st.sampled_from(LAYOUTS))
        algorithm = draw(st.sampled_from(valid_algorithms(spec, plan_layout)))
        block, channels, rows = 0, 0, 0
        if algorithm == "incremental":
            block = draw(st.integers(1, spec.out_width + 2))
            channels = draw(st.sampled_from(channel_blocks(spec)))
            rows = draw(st.sampled_from(row_blocks(spec)))
        if algorithm == "classic":        # input-channel passes
            channels = draw(st.integers(0, cg + 2))
        if algorithm == "depthwise":      # channel blocks (multiplier 1), else planes
            channels = draw(st.integers(0, c + 2))
        if algorithm == "rowwise" or plan_layout == "NHWC":
            rows = draw(st.sampled_from(row_blocks(spec)))
        plan = im2row.Plan(algorithm=algorithm, column_block=block, channel_block=channels,
                           row_block=rows,
                           gemm="packed" if algorithm == "rowwise"
                           else draw(st.sampled_from(["sgemm", "packed"])),
                           isa=draw(st.sampled_from(ISAS)), layout=plan_layout)
    return dict(c=c, h=h, w=w, oc=oc, cg=cg, kh=kh, kw=kw, batch=batch, layout=layout,
                unbatched=unbatched, conv=conv, plan=plan, isa=draw(st.sampled_from(ISAS)),
                bias=draw(st.booleans()), threads=draw(st.sampled_from([None, 1, 2, 3])),
                seed=draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=convolutions())
def test_random_convolutions_match_reference(case):
    rng = np.random.default_rng(case["seed"])
    n, c, h, w = case["batch"], case["c"], case["h"], case["w"]
    shape = (n, c, h, w) if case["layout"] == "NCHW" else (n, h, w, c)
    if case["unbatched"]:
        shape = shape[1:]
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    weight = rng.uniform(-1, 1, (case["oc"], case["cg"], case["kh"], case["kw"])).astype(np.float32)
    bias = rng.uniform(-1, 1, case["oc"]).astype(np.float32) if case["bias"] else None
    before = im2row.get_isa()
    im2row.set_isa(case["isa"])
    try:
        y = im2row.conv2d(x, weight, bias, **case["conv"], layout=case["layout"], plan=case["plan"],
                          threads=case["threads"])
    finally:
        im2row.set_isa(before)
    assert_matches_reference(y, x, weight, bias, **case["conv"], layout=case["layout"])
