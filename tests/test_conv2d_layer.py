"""The Conv2d object: planning (input_shape= or first call), introspection (plan,
workspace_bytes, packed_weight_bytes), reuse across batch and spatial sizes, out=, NHWC."""
import threading

import numpy as np
import pytest

import im2row
from im2row.plan import useful_threads
from conftest import assert_matches_reference, make_operands, reference_pair

pytestmark = pytest.mark.usefixtures("no_tuned_plans")


def test_introspection_before_and_after_first_call(rng):
    x, w, b = make_operands(rng, (2, 8, 12, 10), (16, 8, 3, 3))
    layer = im2row.Conv2d(w, b, padding=1)
    assert layer.plan is None
    assert layer.workspace_bytes is None
    assert layer.packed_weight_bytes is None
    y = layer(x)
    assert_matches_reference(y, x, w, b, padding=1)
    assert isinstance(layer.plan, im2row.Plan)
    assert layer.plan.isa == im2row.get_isa()           # 'auto' is resolved
    assert type(layer.workspace_bytes) is int and layer.workspace_bytes > 0
    assert type(layer.packed_weight_bytes) is int and layer.packed_weight_bytes >= w.nbytes


@pytest.mark.parametrize("input_shape", [(8, 12, 10), (1, 8, 12, 10), (5, 8, 12, 10)],
                         ids=["chw", "nchw-1", "nchw-5"])
def test_input_shape_plans_at_construction(input_shape, rng):
    x, w, b = make_operands(rng, (3, 8, 12, 10), (16, 8, 3, 3))
    layer = im2row.Conv2d(w, b, padding=1, input_shape=input_shape)
    plan, workspace = layer.plan, layer.workspace_bytes
    assert isinstance(plan, im2row.Plan)
    assert type(workspace) is int and type(layer.packed_weight_bytes) is int
    image = im2row.make_spec((1, 8, 12, 10), w.shape, padding=1)
    assert plan == expected_plan(image, input_shape[0] if len(input_shape) == 4 else 1)
    y = layer(x)                                         # batch 3: planned for its own work
    assert_matches_reference(y, x, w, b, padding=1)
    assert layer.plan == expected_plan(image, 3)


def expected_plan(image, batch):
    """The default plan a call of `batch` images gets: the one for the threads its work can
    use (plan.useful_threads) out of the default count."""
    threads = useful_threads(image.with_batch(batch), im2row.get_num_threads())
    return im2row.default_plan(image, threads).resolved()


WORKSPACE_CASES = [(32, 28, 32, 3, 1), (64, 56, 64, 3, 1), (16, 40, 48, 5, 2), (48, 20, 96, 3, 2),
                   (24, 33, 24, 7, 1)]


@pytest.mark.parametrize("threads", [1, 2], ids=lambda t: f"t{t}")
@pytest.mark.parametrize("c,hw,oc,k,stride", WORKSPACE_CASES,
                         ids=["c{}-{}x{}-oc{}-k{}-s{}".format(c, hw, hw, oc, k, s)
                              for c, hw, oc, k, s in WORKSPACE_CASES])
def test_workspace_within_one_input_image(c, hw, oc, k, stride, threads):
    """The issue's promise for the default plan of a k > 1, non-depthwise layer (NCHW)."""
    w = np.zeros((oc, c, k, k), np.float32)
    layer = im2row.Conv2d(w, padding=k // 2, stride=stride, input_shape=(c, hw, hw),
                          threads=threads)
    assert layer.workspace_bytes <= 4 * c * hw * hw, layer.plan


def test_reuse_across_batch_sizes(rng):
    _, w, b = make_operands(rng, (1, 1, 1, 1), (6, 3, 3, 3))
    layer = im2row.Conv2d(w, b, stride=2, padding=(1, 0, 0, 1))
    plans = []
    for batch in (1, 3, 0, 2, 1):
        x = rng.uniform(-1, 1, (batch, 3, 11, 9)).astype(np.float32)
        y = layer(x)
        assert_matches_reference(y, x, w, b, stride=2, padding=(1, 0, 0, 1))
        assert type(layer.workspace_bytes) is int     # may depend on the batch (thread split)
        plans.append((layer.plan, layer.packed_weight_bytes))
    assert all(p == plans[0] for p in plans), plans
    # unbatched input shares the same plan
    x = rng.uniform(-1, 1, (3, 11, 9)).astype(np.float32)
    assert_matches_reference(layer(x), x, w, b, stride=2, padding=(1, 0, 0, 1))
    assert layer.plan == plans[0][0]


def test_reuse_across_spatial_sizes(rng):
    _, w, b = make_operands(rng, (1, 1, 1, 1), (8, 4, 3, 3))
    layer = im2row.Conv2d(w, b, padding=1)
    shapes = [(2, 4, 20, 30), (1, 4, 5, 6), (3, 4, 9, 3), (2, 4, 20, 30)]
    plans = {}
    for shape in shapes:
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        assert_matches_reference(layer(x), x, w, b, padding=1)
        spec = im2row.make_spec((1,) + shape[1:], w.shape, padding=1)
        assert layer.plan == expected_plan(spec, shape[0])
        plans.setdefault(shape[2:], layer.plan)
        assert layer.plan == plans[shape[2:]]


def test_forced_plan_applies_to_every_shape(rng):
    _, w, b = make_operands(rng, (1, 1, 1, 1), (5, 3, 3, 3))
    plan = im2row.Plan(algorithm="incremental", column_block=2, gemm="packed")
    layer = im2row.Conv2d(w, b, padding=1, plan=plan)
    for shape in [(2, 3, 8, 9), (1, 3, 5, 12)]:
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        assert_matches_reference(layer(x), x, w, b, padding=1)
        assert layer.plan == plan.resolved()
        assert layer.plan.isa == im2row.get_isa()


def test_plan_keeps_isa_it_was_made_with(rng):
    isas = im2row.available_isas()
    x, w, b = make_operands(rng, (1, 3, 8, 8), (4, 3, 3, 3))
    im2row.set_isa(isas[-1])
    layer = im2row.Conv2d(w, b, input_shape=x.shape)
    im2row.set_isa(isas[0])
    assert layer.plan.isa == isas[-1]
    assert_matches_reference(layer(x), x, w, b)
    assert layer.plan.isa == isas[-1]


# -- out= ---------------------------------------------------------------------------------------
def _conv_case(rng, layout="NCHW", batch=2):
    shape = (batch, 6, 10, 9) if layout == "NCHW" else (batch, 10, 9, 6)
    x, w, b = make_operands(rng, shape, (12, 3, 3, 3))
    return x, w, b, dict(stride=(2, 1), padding=1, groups=2, layout=layout)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("kind", ["contiguous", "fortran", "strided-view", "unbatched"])
def test_out_argument(kind, layout, rng):
    x, w, b, conv = _conv_case(rng, layout)
    expected = reference_pair(x, w, b, **conv)
    shape = expected[0].shape
    if kind == "unbatched":
        x, shape = x[1], shape[1:]
        expected = reference_pair(x, w, b, **conv)
    big = None
    if kind == "fortran":
        out = np.asfortranarray(np.full(shape, np.nan, np.float32))
    elif kind == "strided-view":
        big = np.full((shape[0], 2 * shape[1] + 1) + shape[2:], -7.0, np.float32)
        out = big[:, 1::2]
        assert out.shape == shape and not out.flags.c_contiguous
    else:
        out = np.full(shape, np.nan, np.float32)
    layer = im2row.Conv2d(w, b, **conv)
    result = layer(x, out=out)
    assert result is out
    assert_matches_reference(out, x, w, b, expected=expected, **conv)
    if big is not None:
        np.testing.assert_array_equal(big[:, 0::2], -7.0)   # neighbours untouched
    # the functional form too, reusing the same buffer
    out[...] = np.nan
    assert im2row.conv2d(x, w, b, **conv, out=out) is out
    assert_matches_reference(out, x, w, b, expected=expected, **conv)


def test_out_with_empty_batch(rng):
    x, w, b, conv = _conv_case(rng, batch=0)
    out = np.empty((0, 12, 5, 9), np.float32)
    assert im2row.conv2d(x, w, b, **conv, out=out) is out


INCREMENTAL_1 = im2row.Plan(algorithm="incremental", column_block=1)


@pytest.mark.parametrize("kernel,padding,plan", [
    ((1, 1), 0, None), ((1, 1), 0, im2row.Plan("classic")), ((1, 1), 0, INCREMENTAL_1),
    ((3, 3), 1, None), ((3, 3), 1, im2row.Plan("classic")), ((3, 3), 1, INCREMENTAL_1),
], ids=["1x1-default", "1x1-classic", "1x1-incremental", "3x3-default", "3x3-classic",
        "3x3-incremental-cb1"])
def test_out_overlapping_input(kernel, padding, plan, rng):
    """out= sharing memory with the input must give the right result (or be refused)."""
    x, w, b = make_operands(rng, (2, 4, 7, 7), (4, 4) + kernel)
    expected = reference_pair(x, w, b, padding=padding)
    try:
        y = im2row.conv2d(x, w, b, padding=padding, out=x, plan=plan)
    except ValueError as exc:
        assert "overlap" in str(exc) or "memory" in str(exc), exc
        return
    assert y is x
    assert_matches_reference(y, None, w, b, expected=expected, padding=padding)


# -- NHWC ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("groups", [1, 2, 6], ids=lambda g: f"g{g}")
def test_nhwc_layer(groups, rng):
    x, w, b = make_operands(rng, (3, 10, 9, 6), (12, 6 // groups, 3, 3))
    conv = dict(stride=(1, 2), padding=(0, 1, 2, 1), groups=groups)
    layer = im2row.Conv2d(w, b, **conv, layout="NHWC", input_shape=(10, 9, 6))
    ref, mag = reference_pair(x, w, b, **conv, layout="NHWC")
    y = layer(x)
    assert y.flags.c_contiguous
    assert_matches_reference(y, x, w, b, expected=(ref, mag), **conv, layout="NHWC")
    single = layer(x[2])
    assert_matches_reference(single, x[2], w, b, expected=(ref[2], mag[2]), **conv,
                             layout="NHWC")
    # an NHWC caller of an NCHW plan pays the channels-first copies of input and output; the
    # default (channels-last) plan copies nothing
    nchw = im2row.Conv2d(w, b, **conv, input_shape=(6, 10, 9))
    forced = im2row.Conv2d(w, b, **conv, layout="NHWC", input_shape=(10, 9, 6), plan=nchw.plan)
    copies = 4 * (x[0].size + 12 * y.shape[1] * y.shape[2])
    assert forced.workspace_bytes == nchw.workspace_bytes + copies
    assert layer.plan.layout == "NHWC" and layer.workspace_bytes < copies


def test_repr_names_the_layer(rng):
    _, w, b = make_operands(rng, (1, 1, 1, 1), (8, 2, 3, 5))
    layer = im2row.Conv2d(w, b, stride=2, padding=(1, 2), groups=2)
    text = repr(layer)
    assert text.startswith("Conv2d(4, 8, kernel_size=(3, 5)")
    assert "groups=2" in text and "plan=None" in text
    layer(np.zeros((1, 4, 8, 8), np.float32))
    assert "Plan(" in repr(layer)


@pytest.mark.parametrize("threads,max_shapes", [(None, 8), (2, 2)], ids=["default", "t2-evicting"])
def test_concurrent_calls_from_python_threads(rng, threads, max_shapes):
    """A Conv2d may be called from several Python threads at once: 8 threads share its
    prepared shapes and their workspaces, also while new shapes evict old ones."""
    _, w, b = make_operands(rng, (1, 1, 1, 1), (16, 8, 3, 3))
    layer = im2row.Conv2d(w, b, padding=1, threads=threads, max_shapes=max_shapes)
    inputs = [rng.uniform(-1, 1, (1 + i % 2, 8, 9 + i % 3, 11)).astype(np.float32)
              for i in range(8)]
    results = [None] * len(inputs)
    errors = []

    def work(i):
        try:
            for _ in range(3):
                results[i] = layer(inputs[i])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for x, y in zip(inputs, results):
        assert_matches_reference(y, x, w, b, padding=1)
