"""What tune() accepts as a model: layer specs, dicts, suite JSON, built-in names, Conv2d objects,
ONNX models and torch modules, all turned into im2row.LayerSpec (im2row.layers)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import im2row
from im2row import LayerSpec, make_spec
from im2row.layers import (builtin_layers, builtin_models, collect_layers, load_layers,
                           unique_specs)

SHARED_LAYERS = Path("/work/shared/layers")


def test_layerspec_from_suite_dict_and_back():
    entry = {"name": "r.2", "input_shape": [1, 64, 56, 56], "out_channels": 64,
             "kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
             "groups": 1, "count": 3}
    layer = LayerSpec.from_dict(entry)
    assert layer.to_spec() == make_spec((1, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert layer.count == 3 and layer.weight_shape == (64, 64, 3, 3)
    assert LayerSpec.from_dict(layer.to_dict()) == layer
    assert json.loads(json.dumps(layer.to_dict()))["kernel_size"] == [3, 3]


def test_layerspec_forms_and_errors():
    a = LayerSpec("a", (8, 10, 10), 4, kernel_size=3, padding="same")
    assert a.input_shape == (1, 8, 10, 10) and a.to_spec().out_height == 10
    b = LayerSpec("b", (1, 10, 10, 8), 4, kernel_size=(1, 1), layout="nhwc")
    assert b.to_spec().layout == "NHWC" and b.in_channels == 8
    with pytest.raises(ValueError, match="unknown layer fields"):
        LayerSpec.from_dict({"name": "x", "input_shape": [1, 3, 8, 8], "out_channels": 4,
                             "kernel": 3})
    with pytest.raises(ValueError, match="divisible|channels"):
        LayerSpec("bad", (1, 6, 8, 8), 4, groups=4)
    with pytest.raises(ValueError, match="lacks"):
        LayerSpec.from_dict({"name": "x", "out_channels": 4})


def test_builtin_models_load():
    names = builtin_models()
    assert {"resnet50", "vgg16", "vgg19", "mobilenet_v2", "shufflenet"} <= set(names)
    for name in names:
        layers = builtin_layers(name)
        assert layers and all(isinstance(layer, LayerSpec) for layer in layers)
        for layer in layers:
            layer.to_spec()
    with pytest.raises(ValueError, match="built-in models"):
        builtin_layers("no_such_net")


@pytest.mark.skipif(not SHARED_LAYERS.is_dir(), reason="no shared layer suites here")
def test_shared_suite_files_load():
    for path in sorted(SHARED_LAYERS.glob("*.json")):
        assert load_layers(path)


def test_duplicates_are_grouped(tmp_path):
    layers = [LayerSpec("a", (1, 8, 10, 10), 8, padding=1, count=2),
              LayerSpec("b", (1, 8, 10, 10), 8, padding=(1, 1, 1, 1)),
              LayerSpec("c", (1, 8, 10, 10), 8, padding=0)]
    groups = unique_specs(layers)
    assert [g.names for g in groups] == [["a", "b"], ["c"]]
    assert [g.count for g in groups] == [3, 1]
    resnet = unique_specs(builtin_layers("resnet50"))
    assert len({g.spec for g in resnet}) == len(resnet)


def test_collect_from_every_list_form(tmp_path):
    spec = make_spec((1, 4, 9, 9), (6, 4, 3, 3), padding=1)
    entry = {"name": "d", "input_shape": [1, 4, 9, 9], "out_channels": 6, "kernel_size": 3,
             "padding": 1}
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps([entry]))
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"layers": [entry]}))
    layer = im2row.Conv2d(np.ones((6, 4, 3, 3), np.float32), padding=1, input_shape=(1, 4, 9, 9))
    forms = [[entry], [LayerSpec.from_dict(entry)], [spec], [spec.to_dict()], [layer], str(suite),
             suite, wrapped, entry, spec]
    for form in forms:
        got = collect_layers(form)
        assert [g.to_spec() for g in got] == [spec], form
    assert len(collect_layers("resnet50")) == len(builtin_layers("resnet50"))


def test_conv2d_without_shape_is_an_error():
    layer = im2row.Conv2d(np.ones((6, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="input_shape"):
        collect_layers([layer])
    with pytest.raises(TypeError):
        collect_layers([object()])


# -- ONNX -------------------------------------------------------------------------------------------

def _onnx_model(batch="N"):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], name="stem", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y2"], name="dw", group=8, kernel_shape=[3, 3],
                         auto_pad="SAME_UPPER"),
        helper.make_node("Conv", ["y2", "w3"], ["y3"], name="dilated", dilations=[2, 2],
                         pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["y3", "w4"], ["y4"], name="asym", strides=[2, 1],
                         pads=[0, 1, 1, 0]),
        helper.make_node("Conv", ["y4", "w5"], ["y5"]),  # unnamed, 1x1
    ]
    inits = [init("w1", (8, 3, 3, 3)), init("b1", (8,)), init("w2", (8, 1, 3, 3)),
             init("w3", (12, 8, 3, 3)), init("w4", (12, 12, 2, 2)), init("w5", (5, 12, 1, 1))]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [batch, 3, 17, 16])],
        [helper.make_tensor_value_info("y5", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_onnx_conv_nodes_with_inferred_shapes(tmp_path):
    model = _onnx_model()
    layers = collect_layers(model)
    assert [layer.name for layer in layers] == ["stem", "dw", "dilated", "asym", "tiny.conv5"]
    specs = [layer.to_spec() for layer in layers]
    assert specs[0] == make_spec((1, 3, 17, 16), (8, 3, 3, 3), stride=2, padding=1)
    assert specs[1] == make_spec((1, 8, 9, 8), (8, 1, 3, 3), padding=1, groups=8)  # SAME_UPPER
    assert specs[2] == make_spec((1, 8, 9, 8), (12, 8, 3, 3), padding=2, dilation=2)
    assert specs[3] == make_spec((1, 12, 9, 8), (12, 12, 2, 2), stride=(2, 1),
                                 padding=(0, 1, 1, 0))
    assert specs[4].kernel_h == 1 and specs[4].out_channels == 5
    import onnx
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    from_path = collect_layers(str(path), input_shape=(2, 3, 17, 16))
    assert from_path[0].to_spec().batch == 2
    assert [layer.to_spec().with_batch(1) for layer in from_path] == specs


def test_onnx_same_lower_padding():
    pytest.importorskip("onnx")
    from im2row.layers import _onnx_same_pads
    # 8 wide, k=4, s=1: total pad 3, LOWER puts the odd one at the beginning
    assert _onnx_same_pads("SAME_LOWER", (8, 8), (4, 4), (1, 1), (1, 1)) == (2, 2, 1, 1)
    assert _onnx_same_pads("SAME_UPPER", (8, 8), (4, 4), (1, 1), (1, 1)) == (1, 1, 2, 2)


def test_tune_onnx_model(cache):
    pytest.importorskip("optuna")
    report = im2row.tune(_onnx_model(), n_trials=3, timeout=2, threads=1, progress=False,
                         repeats=1)
    assert len(report) == 5 and all(r.status in ("tuned", "default") for r in report)


# -- torch ------------------------------------------------------------------------------------------

def test_torch_module_hooks(cache):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding="same", groups=8),
        nn.Conv2d(8, 6, (3, 1), padding=(1, 0), dilation=(1, 1), padding_mode="reflect"),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.Conv2d(6, 6, 3, padding=1),     # same shape as the previous: tuned once
    )
    layers = collect_layers(model, input_shape=(1, 3, 16, 14))
    assert [layer.name for layer in layers] == ["0", "2", "3", "4", "5"]
    specs = [layer.to_spec() for layer in layers]
    assert specs[0] == make_spec((1, 3, 16, 14), (8, 3, 3, 3), stride=2, padding=1)
    assert specs[1] == make_spec((1, 8, 8, 7), (8, 1, 3, 3), padding="same", groups=8)
    # reflect padding happens before the convolution: the conv sees a padded input
    assert specs[2] == make_spec((1, 8, 10, 7), (6, 8, 3, 1), padding=0)
    assert collect_layers((model, torch.zeros(1, 3, 16, 14))) == layers
    pytest.importorskip("optuna")
    report = im2row.tune((model, (1, 3, 16, 14)), n_trials=3, timeout=2, threads=1,
                         progress=False, repeats=1)
    assert len(report) == 4
    assert report.layers[-1].names == ["4", "5"] and report.layers[-1].count == 2


def test_torch_module_needs_an_input_shape():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="example input"):
        collect_layers(torch.nn.Conv2d(3, 4, 3))
