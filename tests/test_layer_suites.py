"""Every convolution layer of the shipped model suites (im2row/models/*.json: ResNet-50, VGG-19,
MobileNetV2, ShuffleNet) against the reference, and the workspace promise of the default plan.

Numerics run at the layer's real shape, or for inputs larger than 56x56 at 56x56 with the same
channels, kernel, stride, padding, dilation and groups (the float64 reference at 224x224 would
dominate the suite's time).  Workspace is checked at the real shape (planning only)."""
import dataclasses
import json
from importlib import resources

import numpy as np
import pytest

import im2row
from conftest import ISAS, assert_matches_reference, make_operands, reference_pair

pytestmark = pytest.mark.usefixtures("no_tuned_plans")

MODELS = ("resnet50", "vgg19", "mobilenet_v2", "shufflenet")
MAX_SIDE = 56


def _load(model):
    text = resources.files("im2row.models").joinpath(f"{model}.json").read_text()
    return json.loads(text)


LAYERS = [layer for model in MODELS for layer in _load(model)]
LAYER_IDS = [layer["name"] for layer in LAYERS]


def _conv_args(layer):
    return dict(stride=tuple(layer["stride"]), padding=tuple(layer["padding"]),
                dilation=tuple(layer["dilation"]), groups=layer["groups"])


def _weight_shape(layer):
    c = layer["input_shape"][1]
    return (layer["out_channels"], c // layer["groups"]) + tuple(layer["kernel_size"])


def _test_input_shape(layer):
    n, c, h, w = layer["input_shape"]
    return (n, c, min(h, MAX_SIDE), min(w, MAX_SIDE))


def _is_general(layer):
    """k > 1 and not depthwise: the layers the workspace promise is about."""
    return tuple(layer["kernel_size"]) != (1, 1) and not _is_depthwise(layer)


def test_suites_are_complete():
    counts = {model: len(_load(model)) for model in MODELS}
    assert counts == {"resnet50": 23, "vgg19": 9, "mobilenet_v2": 30, "shufflenet": 14}
    for layer in LAYERS:
        assert {"name", "input_shape", "out_channels", "kernel_size", "stride", "padding",
                "dilation", "groups"} <= set(layer), layer["name"]


@pytest.fixture(scope="module")
def operands():
    """Operands and reference per layer, computed once for all ISAs and plans."""
    cache = {}

    def get(index):
        if index not in cache:
            layer = LAYERS[index]
            rng = np.random.default_rng(1000 + index)
            x, w, b = make_operands(rng, _test_input_shape(layer), _weight_shape(layer),
                                    bias=index % 2 == 0)
            conv = _conv_args(layer)
            cache.clear()  # keep one layer's arrays at a time (parametrize order is per layer)
            cache[index] = (x, w, b, conv, reference_pair(x, w, b, **conv))
        return cache[index]

    return get


def _is_depthwise(layer):
    return layer["groups"] == layer["input_shape"][1] and layer["groups"] > 1


def _variants():
    """Per layer: the default plan on every ISA, the same plan with the other GEMM backend on
    every ISA (GEMM layers), and the default plan on channels-last data on the best ISA."""
    for index, layer in enumerate(LAYERS):
        for isa in ISAS:
            yield pytest.param(index, isa, "default", "NCHW", id=f"{layer['name']}-{isa}-default")
            if not _is_depthwise(layer):
                yield pytest.param(index, isa, "other", "NCHW",
                                   id=f"{layer['name']}-{isa}-other-gemm")
        yield pytest.param(index, ISAS[0], "default", "NHWC", id=f"{layer['name']}-{ISAS[0]}-nhwc")


@pytest.mark.slow
@pytest.mark.parametrize("index,isa_name,gemm,layout", list(_variants()))
def test_layer_matches_reference(index, isa_name, gemm, layout, operands):
    x, w, b, conv, (ref, mag) = operands(index)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        ref, mag = ref.transpose(0, 2, 3, 1), mag.transpose(0, 2, 3, 1)
    im2row.set_isa(isa_name)
    layer = im2row.Conv2d(w, b, **conv, layout=layout, input_shape=x.shape[1:])
    plan = layer.plan
    assert isinstance(plan, im2row.Plan)
    assert plan.isa == isa_name
    if gemm == "other":
        other = "sgemm" if plan.gemm == "packed" else "packed"
        if plan.algorithm == "rowwise":   # packed only: the other GEMM runs the incremental
            plan = im2row.Plan("incremental", x.shape[-1] if layout == "NCHW" else x.shape[-2],
                               gemm=other)
        else:
            plan = dataclasses.replace(plan, gemm=other)
        layer = im2row.Conv2d(w, b, **conv, layout=layout, plan=plan)
    y = layer(x)
    assert_matches_reference(y, x, w, b, expected=(ref, mag), **conv, layout=layout)


@pytest.mark.parametrize("threads", [1, 2], ids=lambda t: f"t{t}")
@pytest.mark.parametrize("index", range(len(LAYERS)), ids=LAYER_IDS)
def test_layer_default_plan_and_workspace(index, threads):
    """Planning at the real shape: the default plan is valid, the byte counts are ints, and for
    k > 1 non-depthwise layers the workspace (at this thread count) stays within one image's
    input bytes."""
    layer = LAYERS[index]
    n, c, h, w = layer["input_shape"]
    weight = np.zeros(_weight_shape(layer), np.float32)
    conv = _conv_args(layer)
    conv2d = im2row.Conv2d(weight, None, **conv, input_shape=(c, h, w), threads=threads)
    plan = conv2d.plan
    assert isinstance(plan, im2row.Plan)
    spec = im2row.make_spec((1, c, h, w), weight.shape, **conv)
    assert plan.algorithm in im2row.plan_space(spec)["algorithm"]
    workspace, packed = conv2d.workspace_bytes, conv2d.packed_weight_bytes
    assert isinstance(workspace, int) and workspace >= 0
    assert isinstance(packed, int) and packed >= weight.nbytes  # every weight stored at least once
    if _is_general(layer):
        image_bytes = 4 * c * h * w
        assert workspace <= image_bytes, (
            f"{layer['name']}: plan {plan} with {threads} thread(s) needs {workspace} bytes of "
            f"workspace, more than one input image ({image_bytes} bytes)")
        if (h, w) != _test_input_shape(layer)[2:]:
            # the reduced shape the numerics run at keeps the promise too
            small = im2row.Conv2d(weight, None, **conv, threads=threads,
                                  input_shape=(c,) + _test_input_shape(layer)[2:])
            assert small.workspace_bytes <= 4 * c * min(h, MAX_SIDE) * min(w, MAX_SIDE)
