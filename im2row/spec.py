"""Convolution specs: argument checking and shape arithmetic, with torch.nn.functional.conv2d
semantics.  Everything downstream (plans, the Cython core, the tuner) takes a ConvSpec and can
assume it is valid."""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, replace
from typing import Iterable

LAYOUTS = ("NCHW", "NHWC")
# Largest stride, dilation or padding accepted: far beyond any image, and small enough that
# every size derived from it (padded extent, dilated span, offsets) fits the core's ssize_t.
MAX_GEOMETRY = (1 << 40) - 1  # the core checks every geometry value against 2**40 too
# Largest padded input side: an output row longer than this is not an image (and plans walk
# the output columns).
MAX_EXTENT = (1 << 31) - 1


@dataclass(frozen=True)
class ConvSpec:
    """One convolution's shape, fully resolved: per-image, per-call geometry.

    Padding is explicit and may be asymmetric: (top, left, bottom, right), the ONNX order.
    `batch` is part of the spec because plans (and the tuner's cache key) may depend on it."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride_h: int = 1
    stride_w: int = 1
    pad_top: int = 0
    pad_left: int = 0
    pad_bottom: int = 0
    pad_right: int = 0
    dilation_h: int = 1
    dilation_w: int = 1
    groups: int = 1
    layout: str = "NCHW"

    @property
    def out_height(self) -> int:
        return (self.height + self.pad_top + self.pad_bottom
                - self.dilation_h * (self.kernel_h - 1) - 1) // self.stride_h + 1

    @property
    def out_width(self) -> int:
        return (self.width + self.pad_left + self.pad_right
                - self.dilation_w * (self.kernel_w - 1) - 1) // self.stride_w + 1

    @property
    def group_in_channels(self) -> int:
        return self.in_channels // self.groups

    @property
    def group_out_channels(self) -> int:
        return self.out_channels // self.groups

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.in_channels and self.groups > 1

    @property
    def is_pointwise(self) -> bool:
        return self.kernel_h == 1 and self.kernel_w == 1

    @property
    def has_padding(self) -> bool:
        return any((self.pad_top, self.pad_left, self.pad_bottom, self.pad_right))

    @property
    def input_shape(self) -> tuple:
        if self.layout == "NHWC":
            return (self.batch, self.height, self.width, self.in_channels)
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def output_shape(self) -> tuple:
        if self.layout == "NHWC":
            return (self.batch, self.out_height, self.out_width, self.out_channels)
        return (self.batch, self.out_channels, self.out_height, self.out_width)

    @property
    def weight_shape(self) -> tuple:
        return (self.out_channels, self.group_in_channels, self.kernel_h, self.kernel_w)

    @property
    def flops(self) -> int:
        return (2 * self.batch * self.out_channels * self.group_in_channels
                * self.kernel_h * self.kernel_w * self.out_height * self.out_width)

    @property
    def input_bytes(self) -> int:
        return 4 * self.batch * self.in_channels * self.height * self.width

    def with_batch(self, batch: int) -> "ConvSpec":
        return ConvSpec(**{**asdict(self), "batch": batch})

    @property
    def is_column(self) -> bool:
        """A convolution down one column: width 1, a kernel one tap wide, no side padding."""
        return (self.width == 1 and self.kernel_w == 1 and self.pad_left == 0
                and self.pad_right == 0 and self.height > 1)

    def oriented(self) -> "ConvSpec":
        """The spec the runtime plans and runs: a column convolution (C, H, 1) turned into the
        row convolution (C, 1, H), which is the same memory in both layouts (so are its
        (OC, Cg, kh, 1) weights and its output): the kernels are built for long rows, and a
        column is a row of output width 1.  Every other spec is itself."""
        if not self.is_column:
            return self
        return replace(self, height=1, width=self.height, kernel_h=1, kernel_w=self.kernel_h,
                       stride_h=1, stride_w=self.stride_h, pad_top=0, pad_left=self.pad_top,
                       pad_bottom=0, pad_right=self.pad_bottom, dilation_h=1,
                       dilation_w=self.dilation_h)

    def to_dict(self) -> dict:
        return asdict(self)


def _pair(value, name: str, *, minimum: int) -> tuple:
    """int or pair of ints -> pair, each >= minimum."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            pair = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
        if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                     for v in pair):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = (int(pair[0]), int(pair[1]))
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if max(pair) > MAX_GEOMETRY:
        raise ValueError(f"{name} must be < 2**40, got {value!r}")
    return pair


def resolve_padding(padding, kernel: tuple, dilation: tuple, stride: tuple) -> tuple:
    """torch/ONNX padding forms -> (top, left, bottom, right)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            if stride != (1, 1):
                # torch refuses this too: 'same' is ambiguous for strided convolutions.
                raise ValueError("padding='same' is not supported for strided convolutions")
            total_h = dilation[0] * (kernel[0] - 1)
            total_w = dilation[1] * (kernel[1] - 1)
            # torch puts the odd extra row/column at the bottom/right.
            return (total_h // 2, total_w // 2, total_h - total_h // 2, total_w - total_w // 2)
        raise ValueError(f"padding must be an int, a pair, a 4-tuple, 'same' or 'valid'; got {padding!r}")
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        ph, pw = _pair(padding, "padding", minimum=0)
        return (ph, pw, ph, pw)
    try:
        values = tuple(padding)
    except TypeError:
        raise TypeError(f"padding must be an int, a pair, a 4-tuple, 'same' or 'valid'; got {padding!r}") from None
    if len(values) == 2:
        ph, pw = _pair(values, "padding", minimum=0)
        return (ph, pw, ph, pw)
    if len(values) == 4:
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
            raise TypeError(f"padding values must be ints, got {padding!r}")
        if min(values) < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
        if max(values) > MAX_GEOMETRY:
            raise ValueError(f"padding must be < 2**40, got {padding!r}")
        return tuple(int(v) for v in values)
    raise ValueError(f"padding must have 2 (h, w) or 4 (top, left, bottom, right) values, got {padding!r}")


def check_layer_args(weight_shape: Iterable[int], *, stride=1, padding=0, dilation=1,
                     groups=1, layout="NCHW") -> tuple:
    """Check everything about a convolution that does not depend on the input.

    Returns (weight_shape, stride pair, dilation pair, groups, layout)."""
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    weight_shape = tuple(int(v) for v in weight_shape)
    if len(weight_shape) != 4:
        raise ValueError(f"weight must be 4-D (out_channels, in_channels/groups, kh, kw), got shape {weight_shape}")
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool):
        raise TypeError(f"groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if min(weight_shape) < 1:
        raise ValueError(f"weight dimensions must be >= 1, got shape {weight_shape}")
    if weight_shape[0] % groups:
        raise ValueError(f"out_channels ({weight_shape[0]}) must be divisible by groups ({groups})")
    stride = _pair(stride, "stride", minimum=1)
    dilation = _pair(dilation, "dilation", minimum=1)
    resolve_padding(padding, weight_shape[2:], dilation, stride)
    return weight_shape, stride, dilation, int(groups), layout.upper()


def make_spec(input_shape: Iterable[int], weight_shape: Iterable[int], *, stride=1, padding=0,
              dilation=1, groups=1, layout="NCHW") -> ConvSpec:
    """Check a convolution's arguments like torch does and return its ConvSpec.

    input_shape is 4-D (N, C, H, W) or, with layout='NHWC', (N, H, W, C); callers strip the
    unbatched case before calling."""
    weight_shape, stride, dilation, groups, layout = check_layer_args(
        weight_shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
        layout=layout)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 4:
        raise ValueError(f"input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {input_shape}")
    if layout == "NHWC":
        batch, height, width, channels = input_shape
    else:
        batch, channels, height, width = input_shape
    out_channels, group_in, kernel_h, kernel_w = weight_shape
    if min(channels, height, width) < 1 or batch < 0:
        raise ValueError(f"input channels and spatial size must be >= 1, got shape {input_shape}")
    if channels != group_in * groups:
        raise ValueError(f"input has {channels} channels but weight expects "
                         f"{group_in} * groups({groups}) = {group_in * groups}")
    pads = resolve_padding(padding, (kernel_h, kernel_w), dilation, stride)
    spec = ConvSpec(batch, channels, height, width, out_channels, kernel_h, kernel_w,
                    stride[0], stride[1], pads[0], pads[1], pads[2], pads[3],
                    dilation[0], dilation[1], groups, layout)
    padded_h = height + pads[0] + pads[2]
    padded_w = width + pads[1] + pads[3]
    if max(padded_h, padded_w) > MAX_EXTENT:
        raise ValueError(f"padded input {padded_h}x{padded_w} is larger than im2row supports "
                         f"({MAX_EXTENT} per side)")
    span_h = dilation[0] * (kernel_h - 1) + 1
    span_w = dilation[1] * (kernel_w - 1) + 1
    if span_h > padded_h or span_w > padded_w:
        raise ValueError(f"kernel size (dilated: {span_h}x{span_w}) is larger than the padded input "
                         f"({padded_h}x{padded_w})")
    return spec
