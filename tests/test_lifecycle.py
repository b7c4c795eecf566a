"""The life cycle of a convolution (issue 9): out= overlapping any operand, owned weights and
update(), the bounded per-shape cache, conv2d()'s cache of prepared layers, the prepared core
object (checked geometry, reused workspaces, BLAS size limits), thread choice by work."""
import threading

import numpy as np
import pytest

import im2row
from im2row import Plan, _api, _core
from im2row.plan import core_spec, useful_threads
from conftest import ISAS, assert_matches_reference, uniform

pytestmark = pytest.mark.usefixtures("no_tuned_plans")

# Every algorithm x gemm combination for a 3x3 padded layer (x: 1 x 4 x 10 x 10, w: 4x4x3x3).
PLANS_3X3 = [
    Plan("classic", gemm="sgemm"), Plan("classic", gemm="packed"),
    Plan("incremental", column_block=3, gemm="sgemm"),
    Plan("incremental", column_block=3, gemm="packed"),
    Plan("incremental", column_block=10, row_block=4, gemm="packed"),
    Plan("rowwise", row_block=3, gemm="packed"), Plan("rowwise", gemm="packed"),
]
PLANS_1X1 = [Plan("pointwise", gemm="sgemm"), Plan("pointwise", gemm="packed"),
             Plan("classic", gemm="sgemm")]
PLANS_DW = [Plan("depthwise"), Plan("classic", gemm="sgemm"), Plan("classic", gemm="packed")]


def _ids(plans):
    return [f"{p.algorithm}-{p.gemm}-{p.column_block}-{p.row_block}" for p in plans]


# -- out= overlapping the operands ---------------------------------------------------------

def test_issue_reproducer_out_is_the_weight(rng):
    x, w = uniform(rng, (1, 4, 5, 5)), uniform(rng, (4, 4, 3, 3))
    expected_w = w.copy()
    y = im2row.conv2d(x, w, out=w[0:1], plan=Plan("classic", gemm="sgemm"))
    assert np.shares_memory(y, w)
    assert_matches_reference(y, x, expected_w, None)


def test_issue_reproducer_layer_out_is_its_weight_array(rng):
    x, w = uniform(rng, (1, 4, 2, 2)), uniform(rng, (4, 4, 1, 1))
    expected_w = w.copy()
    layer = im2row.Conv2d(w, plan=Plan("pointwise", gemm="sgemm"))
    y = layer(x, out=w.reshape(1, 4, 2, 2))
    assert_matches_reference(y, x, expected_w, None)


@pytest.mark.parametrize("plan", PLANS_3X3, ids=_ids(PLANS_3X3))
def test_out_overlapping_the_bias(plan, rng):
    x, w = uniform(rng, (1, 4, 10, 10)), uniform(rng, (4, 4, 3, 3))
    buf = uniform(rng, (400,))
    b = buf[:4]
    expected_b = b.copy()
    y = im2row.conv2d(x, w, b, padding=1, out=buf.reshape(1, 4, 10, 10), plan=plan)
    assert_matches_reference(y, x, w, expected_b, padding=1)


@pytest.mark.parametrize("plan", PLANS_3X3, ids=_ids(PLANS_3X3))
@pytest.mark.parametrize("operand", ["input", "weight", "bias", "all"])
def test_out_overlapping_each_operand(plan, operand, rng):
    """One buffer holds out and the chosen operand(s); the result equals the reference on
    the operands' values before the call, whatever the plan."""
    n_x, n_w, n_b, n_out = 4 * 10 * 10, 4 * 4 * 3 * 3, 4, 4 * 10 * 10
    buf = uniform(rng, (n_x + n_w + n_b + n_out,))
    offsets = {"input": 0, "weight": 0, "bias": 0, "all": 0}
    x = uniform(rng, (1, 4, 10, 10))
    w = uniform(rng, (4, 4, 3, 3))
    b = uniform(rng, (4,))
    if operand in ("input", "all"):
        buf[:n_x] = x.reshape(-1)
        x = buf[:n_x].reshape(1, 4, 10, 10)
    if operand in ("weight", "all"):
        buf[n_x // 2:n_x // 2 + n_w] = w.reshape(-1)
        w = buf[n_x // 2:n_x // 2 + n_w].reshape(4, 4, 3, 3)
    if operand in ("bias", "all"):
        buf[n_x - 2:n_x + 2] = b
        b = buf[n_x - 2:n_x + 2]
    expected = (x.copy(), w.copy(), b.copy())
    out = buf[offsets[operand]:offsets[operand] + n_out].reshape(1, 4, 10, 10)
    y = im2row.conv2d(x, w, b, padding=1, out=out, plan=plan)
    assert y is out
    assert_matches_reference(out, *expected, padding=1)


@pytest.mark.parametrize("plan", PLANS_1X1, ids=_ids(PLANS_1X1))
def test_out_overlapping_pointwise_operands(plan, rng):
    x = uniform(rng, (1, 8, 4, 4))
    store = uniform(rng, (8 * 8 + 8 * 16,))
    w = store[:64].reshape(8, 8, 1, 1)
    b = store[64:72]
    expected = (x.copy(), w.copy(), b.copy())
    out = store[:128].reshape(1, 8, 4, 4)
    im2row.conv2d(x, w, b, out=out, plan=plan)
    assert_matches_reference(out, *expected)


def test_out_is_a_strided_view_of_the_input(rng):
    base = uniform(rng, (1, 4, 10, 20))
    x = base[:, :, :, ::2]                      # non-contiguous input
    expected = x.copy()
    w, b = uniform(rng, (4, 4, 3, 3)), uniform(rng, (4,))
    out = base[:, :, :, 1::2]                   # interleaved with it
    im2row.conv2d(x, w, b, padding=1, out=out)
    assert_matches_reference(out, expected, w, b, padding=1)


# -- owned weights --------------------------------------------------------------------------

ALL_PLANS = [("3x3", p) for p in PLANS_3X3] + [("1x1", p) for p in PLANS_1X1] + \
            [("dw", p) for p in PLANS_DW]
LAYERS = {"3x3": ((1, 4, 10, 10), (6, 4, 3, 3), dict(padding=1)),
          "1x1": ((1, 8, 5, 6), (6, 8, 1, 1), dict()),
          "dw": ((1, 4, 9, 9), (8, 1, 3, 3), dict(padding=1, groups=4))}


@pytest.mark.parametrize("kind,plan", ALL_PLANS, ids=[f"{k}-{i}" for k, i in
                                                       zip([k for k, _ in ALL_PLANS],
                                                           _ids([p for _, p in ALL_PLANS]))])
def test_weight_edits_need_update_on_every_plan(kind, plan, rng):
    x_shape, w_shape, conv = LAYERS[kind]
    x = uniform(rng, x_shape)
    w, b = uniform(rng, w_shape), uniform(rng, (w_shape[0],))
    w0, b0 = w.copy(), b.copy()
    layer = im2row.Conv2d(w, b, plan=plan, **conv)
    assert_matches_reference(layer(x), x, w0, b0, **conv)
    w *= -2.0                                   # the caller edits its arrays in place
    b += 1.0
    assert_matches_reference(layer(x), x, w0, b0, **conv)
    x2 = uniform(rng, (2,) + x_shape[1:-1] + (x_shape[-1] + 3,))   # a new shape, same snapshot
    assert_matches_reference(layer(x2), x2, w0, b0, **conv)
    np.testing.assert_array_equal(layer.weight, w0)
    np.testing.assert_array_equal(layer.bias, b0)
    layer.update(weight=w)
    assert_matches_reference(layer(x), x, w, b0, **conv)
    assert_matches_reference(layer(x2), x2, w, b0, **conv)
    layer.update(bias=b)
    assert_matches_reference(layer(x), x, w, b, **conv)
    assert_matches_reference(layer(x2), x2, w, b, **conv)
    np.testing.assert_array_equal(layer.weight, w)


def test_update_adds_a_bias_and_checks_shapes(rng):
    x, w = uniform(rng, (1, 3, 7, 7)), uniform(rng, (5, 3, 3, 3))
    layer = im2row.Conv2d(w, padding=1)
    assert_matches_reference(layer(x), x, w, None, padding=1)
    b = uniform(rng, (5,))
    layer.update(bias=b)
    assert_matches_reference(layer(x), x, w, b, padding=1)
    with pytest.raises(ValueError, match="weight must have shape"):
        layer.update(weight=w[:4])
    with pytest.raises(ValueError, match="bias"):
        layer.update(bias=b[:4])
    with pytest.raises(TypeError, match="float32"):
        layer.update(weight=w.astype(np.float64))


def test_layer_weight_views_are_read_only(rng):
    layer = im2row.Conv2d(uniform(rng, (2, 2, 3, 3)), uniform(rng, (2,)))
    with pytest.raises(ValueError):
        layer.weight[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        layer.bias[0] = 1.0


# -- bounded memory ---------------------------------------------------------------------------

def test_many_input_sizes_keep_bounded_memory(rng):
    w = uniform(rng, (32, 32, 3, 3))
    layer = im2row.Conv2d(w, padding=1, max_shapes=8)
    for size in range(3, 153):
        layer(np.zeros((1, 32, size, 4), np.float32))
    assert len(layer._entries) == 8
    # Packed copies are shared across input sizes: at most one per weight layout.
    assert layer.held_bytes <= 5 * w.nbytes
    assert len(layer.planned_specs()) == 8
    x = uniform(rng, (1, 32, 20, 4))               # an evicted shape comes back, still right
    assert_matches_reference(layer(x), x, w, None, padding=1)


def test_max_shapes_is_checked():
    with pytest.raises(ValueError, match="max_shapes"):
        im2row.Conv2d(np.zeros((1, 1, 1, 1), np.float32), max_shapes=0)


# -- conv2d(): cached prepared layers -------------------------------------------------------------

def test_conv2d_sees_in_place_weight_and_bias_edits(rng):
    x, w, b = uniform(rng, (1, 4, 9, 9)), uniform(rng, (8, 4, 3, 3)), uniform(rng, (8,))
    assert_matches_reference(im2row.conv2d(x, w, b, padding=1), x, w, b, padding=1)
    w[3, 2, 1, 0] += 0.5                          # one element
    assert_matches_reference(im2row.conv2d(x, w, b, padding=1), x, w, b, padding=1)
    w[0, 0, 0, 0], w[0, 0, 0, 1] = w[0, 0, 0, 1], w[0, 0, 0, 0]   # a swap
    assert_matches_reference(im2row.conv2d(x, w, b, padding=1), x, w, b, padding=1)
    w *= -1.0                                      # every sign bit
    assert_matches_reference(im2row.conv2d(x, w, b, padding=1), x, w, b, padding=1)
    b[7] = 3.0
    assert_matches_reference(im2row.conv2d(x, w, b, padding=1), x, w, b, padding=1)
    ws = w[:, :, ::-1, :]                         # a non-contiguous weight view
    assert_matches_reference(im2row.conv2d(x, ws, b, padding=1), x, ws, b, padding=1)
    ws.base[1, 1, 1, 1] = 9.0
    assert_matches_reference(im2row.conv2d(x, ws, b, padding=1), x, ws, b, padding=1)


def test_conv2d_reuses_its_prepared_layer(rng):
    x, w = uniform(rng, (1, 4, 9, 9)), uniform(rng, (8, 4, 3, 3))
    im2row.conv2d(x, w, padding=1)
    key_count = len(_api._oneshot_layers)
    layers = {id(entry[1]) for entry in _api._oneshot_layers._layers.values()}
    for _ in range(3):
        im2row.conv2d(x, w, padding=1)
    assert len(_api._oneshot_layers) == key_count
    assert {id(entry[1]) for entry in _api._oneshot_layers._layers.values()} == layers
    im2row.conv2d(x, w, padding=2)                 # other arguments: another layer
    assert len(_api._oneshot_layers) == min(key_count + 1, _api._oneshot_layers.max_layers)


def test_conv2d_arguments_of_another_type_are_checked_again(rng):
    x, w = uniform(rng, (1, 4, 8, 8)), uniform(rng, (4, 2, 3, 3))
    im2row.conv2d(x, w, groups=2)
    with pytest.raises(TypeError, match="groups"):
        im2row.conv2d(x, w, groups=2.0)
    im2row.conv2d(x, w, stride=(1, 1), groups=2)
    with pytest.raises(TypeError, match="stride"):
        im2row.conv2d(x, w, stride=(1.0, 1.0), groups=2)


def test_conv2d_cache_bounds(rng):
    try:
        im2row.set_conv2d_cache(max_layers=3)
        weights = [uniform(rng, (4, 4, 3, 3)) for _ in range(6)]
        x = uniform(rng, (1, 4, 6, 6))
        for w in weights:
            assert_matches_reference(im2row.conv2d(x, w), x, w, None)
        assert len(_api._oneshot_layers) == 3
        im2row.set_conv2d_cache(max_layers=0)
        assert_matches_reference(im2row.conv2d(x, weights[0]), x, weights[0], None)
        assert len(_api._oneshot_layers) == 0
        im2row.set_conv2d_cache(max_layers=8, max_bytes=1)   # each layer alone is over: keep 1
        for w in weights:
            im2row.conv2d(x, w)
        assert len(_api._oneshot_layers) == 1
        with pytest.raises(ValueError, match="max_layers"):
            im2row.set_conv2d_cache(max_layers=-1)
    finally:
        im2row.set_conv2d_cache()


def test_fingerprint_tells_edits_apart():
    rng = np.random.default_rng(5)
    a = rng.standard_normal(1001).astype(np.float32)
    seen = {_core.fingerprint(a)}
    for edit in range(40):
        b = a.copy()
        i, j = rng.integers(0, a.size, 2)
        if edit % 4 == 0:
            b[i] = -b[i]
            b[j] = -b[j]
        elif edit % 4 == 1:
            b[i], b[j] = b[j], b[i]
        elif edit % 4 == 2:
            b[i] = np.nextafter(b[i], np.float32(np.inf))
        else:
            b = -b
        if not np.array_equal(b.view(np.uint32), a.view(np.uint32)):
            fp = _core.fingerprint(b)
            assert fp not in seen or np.array_equal(b, a)
    assert _core.fingerprint(a[:-1]) != _core.fingerprint(a)
    assert _core.fingerprint(a) == _core.fingerprint(a.copy())
    with pytest.raises(ValueError, match="contiguous"):
        _core.fingerprint(a[::2])


# -- the prepared core object ------------------------------------------------------------------

def _geometry(**changes):
    spec = im2row.make_spec((1, 4, 8, 8), (6, 4, 3, 3), padding=1)
    values = dict(zip(("C", "H", "W", "OC", "kh", "kw", "sh", "sw", "pt", "pl", "dh", "dw",
                       "OH", "OW", "groups"), core_spec(spec)))
    values.update(changes)
    return tuple(values.values())


def _convolution(geometry, algorithm="classic", packed=False, weights=None):
    kernels = im2row.hwinfo.kernel_set(im2row.get_isa())
    if weights is None:
        weights = np.zeros(6 * 4 * 9, np.float32)
    return _core.Convolution(geometry, algorithm, 1, 0, 0, kernels, packed, False, weights, None)


@pytest.mark.parametrize("field,value", [("sw", 0), ("dw", 0), ("sh", 0), ("dh", -1),
                                         ("groups", 0), ("OH", 0), ("pt", -1), ("C", 1 << 50),
                                         ("groups", 3)])
def test_core_checks_its_geometry(field, value):
    with pytest.raises(ValueError):
        _convolution(_geometry(**{field: value}))


def test_core_checks_geometry_types_and_length():
    with pytest.raises(TypeError, match="int"):
        _convolution(_geometry(sw=1.0))
    with pytest.raises(ValueError, match="15 values"):
        _convolution(_geometry()[:-1])
    with pytest.raises(ValueError, match="packed weights"):
        _convolution(_geometry(), weights=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="algorithm"):
        _convolution(_geometry(), algorithm="fft")


def test_core_refuses_sizes_beyond_sgemm_ints():
    # A 1 x 2^31+ output row: sgemm's 32-bit n cannot hold it; the packed GEMM can.
    wide = _geometry(C=1, W=1 << 31, H=1, OC=1, kh=1, kw=1, pt=0, pl=0, OH=1, OW=1 << 31)
    with pytest.raises(ValueError, match="32-bit"):
        _convolution(wide, algorithm="pointwise", packed=False, weights=np.zeros(1, np.float32))


def test_core_object_checks_arrays_per_call(rng):
    spec = im2row.make_spec((1, 4, 8, 8), (6, 4, 3, 3), padding=1)
    w = uniform(rng, (6, 4, 3, 3))
    kernels = im2row.hwinfo.kernel_set(im2row.get_isa())
    packed = _core.pack_weights(core_spec(spec), "classic", w, kernels, False)
    conv = _core.Convolution(core_spec(spec), "classic", 1, 0, 0, kernels, False, False, packed,
                             None)
    x = uniform(rng, (2, 4, 8, 8))
    out = np.empty((2, 6, 8, 8), np.float32)
    conv.run(x, out, 1)
    assert_matches_reference(out, x, w, None, padding=1)
    with pytest.raises(ValueError, match="shapes"):
        conv.run(np.ascontiguousarray(x[:, :3]), out, 1)
    with pytest.raises(ValueError, match="contiguous"):
        conv.run(x[:, :, :, ::2], out, 1)
    with pytest.raises(TypeError, match="float32"):
        conv.run(x.astype(np.float64), out, 1)
    assert conv.workspace_floats(2, 2) >= conv.workspace_floats(1, 1) > 0


def test_one_layer_from_many_python_threads(rng):
    w, b = uniform(rng, (16, 8, 3, 3)), uniform(rng, (16,))
    layer = im2row.Conv2d(w, b, padding=1, threads=2)
    shapes = [(1, 8, 12, 12), (2, 8, 7, 9), (1, 8, 30, 5), (3, 8, 6, 6)]
    inputs = [uniform(rng, shapes[i % len(shapes)]) for i in range(8)]
    results = [None] * 8
    errors = []

    def work(i):
        try:
            for _ in range(5):
                results[i] = layer(inputs[i])
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors
    for x, y in zip(inputs, results):
        assert_matches_reference(y, x, w, b, padding=1)


@pytest.mark.parametrize("isa", ISAS)
def test_workspace_reuse_across_shapes_and_threads(isa, rng, monkeypatch):
    """Calls at 1 and 2 threads and with several batch sizes take workspaces of different
    sizes from one pool (never zeroed: tests poison them with NaN)."""
    monkeypatch.setattr(im2row.plan, "MIN_WORK_PER_THREAD", 1)
    im2row.set_isa(isa)
    w = uniform(rng, (12, 5, 3, 3))
    for plan in (Plan("incremental", column_block=2, gemm="packed"), Plan("rowwise", gemm="packed"),
                 Plan("classic", gemm="sgemm")):
        for threads in (1, 2, 1):
            layer = im2row.Conv2d(w, padding=1, plan=plan, threads=threads)
            for batch in (1, 3, 1):
                x = uniform(rng, (batch, 5, 9, 11))
                assert_matches_reference(layer(x), x, w, None, padding=1)


# -- threads by work -----------------------------------------------------------------------------

def test_small_work_runs_on_one_thread():
    tiny = im2row.make_spec((1, 16, 8, 8), (16, 16, 3, 3), padding=1)
    big = im2row.make_spec((1, 256, 14, 14), (256, 256, 3, 3), padding=1)
    assert useful_threads(tiny, 8) == 1
    assert useful_threads(big, 2) == 2
    assert useful_threads(big.with_batch(4), 16) >= useful_threads(big, 16)
    assert all(useful_threads(big, t) <= t for t in range(1, 9))


# -- inputs the API converts or refuses -----------------------------------------------------------

def test_big_endian_float32_is_converted(rng):
    x, w, b = uniform(rng, (1, 3, 6, 6)), uniform(rng, (4, 3, 3, 3)), uniform(rng, (4,))
    y = im2row.conv2d(x.astype(">f4"), w.astype(">f4"), b.astype(">f4"), padding=1)
    assert y.dtype == np.float32 and y.dtype.isnative
    assert_matches_reference(y, x, w, b, padding=1)
    with pytest.raises(TypeError, match="native"):
        im2row.conv2d(x, w, padding=1, out=np.empty((1, 4, 6, 6), ">f4"))


def test_plan_must_be_a_plan(rng):
    x, w = uniform(rng, (1, 3, 6, 6)), uniform(rng, (4, 3, 3, 3))
    with pytest.raises(TypeError, match="Plan"):
        im2row.conv2d(x, w, plan={"algorithm": "classic"})
    with pytest.raises(TypeError, match="Plan"):
        im2row.Conv2d(w, plan="classic")
