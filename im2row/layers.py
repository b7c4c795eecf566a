"""Layer lists: what a model's convolutions look like, for the tuner and the benchmarks.

A LayerSpec is one convolution layer in the layer-suite JSON form (the files in im2row/models
and /work/shared/layers):

    {"name": "resnet50.2", "input_shape": [1, 64, 56, 56], "out_channels": 64,
     "kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
     "groups": 1, "count": 3}

collect_layers() turns anything the tuner accepts into LayerSpecs: LayerSpec/dict/ConvSpec
lists, Conv2d objects, a suite JSON path, a built-in model name, an ONNX model (path or
ModelProto; needs the optional `onnx` package) or a torch nn.Module run once on an example
input (needs torch).  Nothing here imports optuna, onnx or torch unless asked to.
"""
from __future__ import annotations

import json
import numbers
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable

from .spec import LAYOUTS, ConvSpec, make_spec

_MODELS_DIR = Path(__file__).with_name("models")


def _pair(value, name: str) -> tuple:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (int(value), int(value))
    values = tuple(value)
    if len(values) == 1:
        return (int(values[0]), int(values[0]))
    if len(values) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {value!r}")
    return (int(values[0]), int(values[1]))


def _padding(value):
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (int(value), int(value))
    values = tuple(int(v) for v in value)
    if len(values) not in (2, 4):
        raise ValueError(f"padding must be an int, 'same', 'valid', (h, w) or "
                         f"(top, left, bottom, right); got {value!r}")
    return values


@dataclass(frozen=True)
class LayerSpec:
    """One convolution layer of a model, as the layer-suite JSON files describe it.

    input_shape is (N, C, H, W) (NCHW) or (N, H, W, C) with layout='NHWC'; padding is an int,
    a pair, (top, left, bottom, right), 'same' or 'valid'; count is how many layers of the model
    share this shape (the tuner tunes each distinct shape once and weights reports by count)."""

    name: str
    input_shape: tuple
    out_channels: int
    kernel_size: tuple = (3, 3)
    stride: tuple = (1, 1)
    padding: object = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    count: int = 1
    layout: str = "NCHW"

    def __post_init__(self):
        shape = tuple(int(v) for v in self.input_shape)
        if len(shape) == 3:
            shape = (1,) + shape
        if len(shape) != 4:
            raise ValueError(f"{self.name}: input_shape must be 4-D, got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "out_channels", int(self.out_channels))
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "kernel_size"))
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation"))
        object.__setattr__(self, "padding", _padding(self.padding))
        object.__setattr__(self, "groups", int(self.groups))
        object.__setattr__(self, "count", int(self.count))
        layout = str(self.layout).upper()
        if layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        object.__setattr__(self, "layout", layout)
        self.to_spec()  # fail early, with torch's messages, on an impossible layer

    @property
    def in_channels(self) -> int:
        return self.input_shape[3] if self.layout == "NHWC" else self.input_shape[1]

    @property
    def weight_shape(self) -> tuple:
        return (self.out_channels, self.in_channels // self.groups) + self.kernel_size

    def to_spec(self) -> ConvSpec:
        """The resolved ConvSpec (explicit padding, batch included)."""
        try:
            return make_spec(self.input_shape, self.weight_shape, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, groups=self.groups,
                             layout=self.layout)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"layer {self.name!r}: {exc}") from None

    def to_dict(self) -> dict:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_dict(cls, data: dict, *, default_name: str = "layer") -> "LayerSpec":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown layer fields {sorted(unknown)} in {data!r}; "
                             f"expected some of {sorted(names)}")
        missing = {"input_shape", "out_channels"} - set(data)
        if missing:
            raise ValueError(f"layer {data.get('name', default_name)!r} lacks {sorted(missing)}")
        data = dict(data)
        data.setdefault("name", default_name)
        return cls(**data)

    @classmethod
    def from_spec(cls, spec: ConvSpec, name: str = "layer", count: int = 1) -> "LayerSpec":
        shape = spec.input_shape
        return cls(name=name, input_shape=shape, out_channels=spec.out_channels,
                   kernel_size=(spec.kernel_h, spec.kernel_w),
                   stride=(spec.stride_h, spec.stride_w),
                   padding=(spec.pad_top, spec.pad_left, spec.pad_bottom, spec.pad_right),
                   dilation=(spec.dilation_h, spec.dilation_w), groups=spec.groups,
                   count=count, layout=spec.layout)


# -- built-in models and suite files ------------------------------------------------------------

def builtin_models() -> list:
    """Names of the layer lists shipped with im2row (im2row/models/*.json)."""
    return sorted(p.stem for p in _MODELS_DIR.glob("*.json"))


def load_layers(path) -> list:
    """Read a layer-suite JSON file: a list of layer dicts (or {"layers": [...]})."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and "layers" in data:
        data = data["layers"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of layers")
    return [LayerSpec.from_dict(item, default_name=f"{path.stem}.{i}")
            for i, item in enumerate(data)]


def builtin_layers(name: str) -> list:
    """The layer list of a built-in model ('resnet50', 'vgg16', ...)."""
    path = _MODELS_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"no built-in model {name!r}; built-in models: {builtin_models()}")
    return load_layers(path)


def save_layers(layers: Iterable[LayerSpec], path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(layer.to_dict()) for layer in layers) + "\n]\n")


# -- Conv2d objects -----------------------------------------------------------------------------

def layers_from_conv2d(layer, name: str = "conv") -> list:
    """The shapes a Conv2d has been prepared for (input_shape=... or a first call)."""
    specs = layer.planned_specs()
    if not specs:
        raise ValueError(f"{name}: this Conv2d has no input shape yet; create it with "
                         f"input_shape=(N, C, H, W) or call it once before tuning")
    return [LayerSpec.from_spec(spec, name if len(specs) == 1 else f"{name}[{i}]")
            for i, spec in enumerate(specs)]


# -- ONNX ---------------------------------------------------------------------------------------

def _onnx_dims(value_info) -> list | None:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _onnx_same_pads(auto_pad: str, size: tuple, kernel: tuple, stride: tuple,
                    dilation: tuple) -> tuple:
    """ONNX SAME_UPPER / SAME_LOWER: output = ceil(input / stride), the odd pad at the end
    (UPPER) or at the beginning (LOWER).  Returns (top, left, bottom, right)."""
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        small, large = total // 2, total - total // 2
        if auto_pad == "SAME_UPPER":
            begin.append(small)
            end.append(large)
        else:
            begin.append(large)
            end.append(small)
    return (begin[0], begin[1], end[0], end[1])


def layers_from_onnx(model, input_shape=None) -> list:
    """Conv nodes of an ONNX model (a path or a ModelProto), shapes from onnx.shape_inference.

    input_shape, if given, replaces the shape of the model's first (non-initializer) input
    before inference: for models with symbolic dimensions.  A symbolic batch becomes 1."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("reading ONNX models needs the 'onnx' package: pip install onnx") from None
    if isinstance(model, (str, os.PathLike)):
        name = Path(model).stem
        model = onnx.load(str(model))
    else:
        name = model.graph.name or "onnx"
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    if input_shape is not None:
        inputs = [i for i in graph.input if i.name not in initializers]
        if not inputs:
            raise ValueError("the ONNX model has no graph input to give input_shape to")
        dims = inputs[0].type.tensor_type.shape.dim
        if len(dims) != len(input_shape):
            raise ValueError(f"input_shape {tuple(input_shape)} has {len(input_shape)} dims; "
                             f"the model's input {inputs[0].name!r} has {len(dims)}")
        for dim, value in zip(dims, input_shape):
            dim.Clear()
            dim.dim_value = int(value)
    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = _onnx_dims(vi)
        if dims is not None:
            shapes[vi.name] = dims
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)

    layers = []
    for index, node in enumerate(graph.node):
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        label = node.name or f"{name}.conv{index}"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        x_dims = shapes.get(node.input[0])
        w_dims = shapes.get(node.input[1])
        if w_dims is None or len(w_dims) != 4 or None in w_dims:
            raise ValueError(f"ONNX Conv {label!r}: weight shape unknown or not 2-D conv "
                             f"({w_dims}); only Conv2d layers are supported")
        if x_dims is None or len(x_dims) != 4:
            raise ValueError(f"ONNX Conv {label!r}: input shape unknown ({x_dims}); pass "
                             f"input_shape=(N, C, H, W) for the model's input")
        if x_dims[0] is None:
            x_dims = [1] + x_dims[1:]
        if None in x_dims:
            raise ValueError(f"ONNX Conv {label!r}: input shape {x_dims} has symbolic dims; "
                             f"pass input_shape=(N, C, H, W) for the model's input")
        oc, cg, kh, kw = w_dims
        kernel = tuple(attrs.get("kernel_shape", (kh, kw)))
        stride = tuple(attrs.get("strides", (1, 1)))
        dilation = tuple(attrs.get("dilations", (1, 1)))
        groups = int(attrs.get("group", 1))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = _onnx_same_pads(auto_pad, tuple(x_dims[2:]), kernel, stride, dilation)
        elif auto_pad == "VALID":
            pads = (0, 0, 0, 0)
        else:
            pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
        layers.append(LayerSpec(name=label, input_shape=tuple(x_dims), out_channels=oc,
                                kernel_size=kernel, stride=stride, padding=pads,
                                dilation=dilation, groups=groups))
    return layers


def _is_onnx_model(obj) -> bool:
    return type(obj).__name__ == "ModelProto" and hasattr(obj, "graph")


# -- torch --------------------------------------------------------------------------------------

def _is_torch_module(obj) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module"
               for c in type(obj).__mro__)


def layers_from_torch(module, example) -> list:
    """Conv2d modules of a torch nn.Module, with the input shapes seen in one forward pass on
    `example` (a tensor or an input shape; zeros of that shape are used)."""
    import torch

    if not isinstance(example, torch.Tensor):
        shape = tuple(int(v) for v in example)
        example = torch.zeros(shape)
    names = {m: n for n, m in module.named_modules()}
    seen = []

    def hook(mod, inputs, _output):
        x = inputs[0]
        shape = tuple(x.shape)
        padding = mod.padding
        if getattr(mod, "padding_mode", "zeros") != "zeros":
            # reflect/replicate/circular pad separately, then convolve without padding.
            if isinstance(padding, str):
                raise ValueError(f"{names.get(mod)}: padding_mode={mod.padding_mode!r} with "
                                 f"padding={padding!r} is not supported")
            ph, pw = padding
            shape = shape[:-2] + (shape[-2] + 2 * ph, shape[-1] + 2 * pw)
            padding = (0, 0)
        seen.append(LayerSpec(name=names.get(mod) or "conv", input_shape=shape,
                              out_channels=mod.out_channels, kernel_size=mod.kernel_size,
                              stride=mod.stride, padding=padding, dilation=mod.dilation,
                              groups=mod.groups))

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, torch.nn.Conv2d)]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(example)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return seen


# -- everything the tuner accepts ---------------------------------------------------------------

def collect_layers(model_layers, input_shape=None) -> list:
    """Anything tune() accepts -> a list of LayerSpec (duplicates kept; see unique_specs).

    - a built-in model name ('resnet50'), a layer-suite .json path or an .onnx path;
    - an ONNX ModelProto; a torch nn.Module with input_shape=... (or a (module, shape) pair);
    - a list of LayerSpec, layer dicts (suite form, or ConvSpec fields), ConvSpec, Conv2d."""
    if isinstance(model_layers, (str, os.PathLike)):
        text = os.fspath(model_layers)
        path = Path(text)
        if path.suffix.lower() == ".onnx":
            return layers_from_onnx(path, input_shape)
        if path.suffix.lower() == ".json" or path.is_file():
            return load_layers(path)
        return builtin_layers(text)
    if _is_onnx_model(model_layers):
        return layers_from_onnx(model_layers, input_shape)
    if _is_torch_module(model_layers):
        if input_shape is None:
            raise ValueError("a torch module needs an example input: "
                             "tune(module, input_shape=(N, C, H, W)) or tune((module, shape))")
        return layers_from_torch(model_layers, input_shape)
    if (isinstance(model_layers, tuple) and len(model_layers) == 2
            and _is_torch_module(model_layers[0])):
        return layers_from_torch(*model_layers)
    if isinstance(model_layers, (LayerSpec, ConvSpec, dict)) or hasattr(model_layers, "planned_specs"):
        model_layers = [model_layers]
    layers = []
    for index, item in enumerate(model_layers):
        label = f"layer{index}"
        if isinstance(item, LayerSpec):
            layers.append(item)
        elif isinstance(item, ConvSpec):
            layers.append(LayerSpec.from_spec(item, label))
        elif isinstance(item, dict):
            if "kernel_h" in item and "in_channels" in item:
                layers.append(LayerSpec.from_spec(ConvSpec(**item), label))
            else:
                layers.append(LayerSpec.from_dict(item, default_name=label))
        elif hasattr(item, "planned_specs") and hasattr(item, "weight"):
            layers.extend(layers_from_conv2d(item, label))
        else:
            raise TypeError(f"cannot read a convolution layer from {type(item).__name__}: "
                            f"{item!r}")
    return layers


@dataclass
class UniqueShape:
    """One distinct ConvSpec and the layers that share it."""

    spec: ConvSpec
    names: list = field(default_factory=list)
    count: int = 0

    @property
    def name(self) -> str:
        if len(self.names) <= 2:
            return ", ".join(self.names)
        return f"{self.names[0]} (+{len(self.names) - 1})"


def unique_specs(layers: Iterable[LayerSpec]) -> list:
    """Distinct shapes in first-seen order, each with its layer names and total count."""
    groups: dict = {}
    for layer in layers:
        spec = layer.to_spec()
        group = groups.get(spec)
        if group is None:
            group = groups[spec] = UniqueShape(spec)
        group.names.append(layer.name)
        group.count += layer.count
    return list(groups.values())
