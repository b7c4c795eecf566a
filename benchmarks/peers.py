"""The contenders im2row is measured against, each prepared once and returned as a zero-argument
callable, so that only the convolution itself is timed.

- numpy im2col: classic im2col with numpy, then scipy.linalg.blas.sgemm (the same OpenBLAS that
  im2row calls), one GEMM per (image, group).
- torch NCHW / torch channels_last: torch.nn.functional.conv2d under no_grad.
- onnxruntime: a one-node Conv model, weights as initializers, run through an IOBinding.

Every peer is given its best ordinary path (weights prepared, ORT output preallocated), so that the
comparison errs in the peers' favour.  Nothing here imports im2row: the peers and the float64
reference keep working while the library is broken."""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pair(value) -> tuple:
    if isinstance(value, numbers.Integral):
        return (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        return (value[0], value[0])
    if len(value) != 2:
        raise ValueError(f"expected an int or a pair, got {value!r}")
    return value


@dataclass(frozen=True)
class Geometry:
    """One suite layer, resolved: shapes, explicit (top, left, bottom, right) padding."""

    name: str
    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: tuple
    stride: tuple
    pads: tuple
    dilation: tuple
    groups: int
    count: int = 1
    # The padding argument as written in the suite (passed to im2row unchanged).
    padding_arg: object = 0

    @property
    def out_height(self) -> int:
        span = self.dilation[0] * (self.kernel[0] - 1) + 1
        return (self.height + self.pads[0] + self.pads[2] - span) // self.stride[0] + 1

    @property
    def out_width(self) -> int:
        span = self.dilation[1] * (self.kernel[1] - 1) + 1
        return (self.width + self.pads[1] + self.pads[3] - span) // self.stride[1] + 1

    @property
    def input_shape(self) -> tuple:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self) -> tuple:
        return (self.out_channels, self.in_channels // self.groups) + tuple(self.kernel)

    @property
    def output_shape(self) -> tuple:
        return (self.batch, self.out_channels, self.out_height, self.out_width)

    @property
    def flops(self) -> int:
        kh, kw = self.kernel
        return (2 * self.batch * self.out_channels * (self.in_channels // self.groups)
                * kh * kw * self.out_height * self.out_width)

    @property
    def symmetric_padding(self) -> bool:
        return self.pads[0] == self.pads[2] and self.pads[1] == self.pads[3]

    @property
    def is_pointwise_direct(self) -> bool:
        """1x1, stride 1, no padding: the input already is the patch matrix."""
        return (tuple(self.kernel) == (1, 1) and tuple(self.stride) == (1, 1)
                and not any(self.pads))

    def image_input_bytes(self) -> int:
        return 4 * self.in_channels * self.height * self.width

    def im2col_bytes(self) -> int:
        """Patch matrix of classic im2col for one image (all groups): kh*kw*C x OH*OW floats."""
        kh, kw = self.kernel
        return 4 * self.in_channels * kh * kw * self.out_height * self.out_width

    def describe(self) -> str:
        kh, kw = self.kernel
        text = f"{self.in_channels}>{self.out_channels} {kh}x{kw}"
        if self.stride != (1, 1):
            text += f" s{self.stride[0]}" if self.stride[0] == self.stride[1] else f" s{self.stride}"
        if self.dilation != (1, 1):
            text += f" d{self.dilation[0]}"
        if self.groups > 1:
            text += " dw" if self.groups == self.in_channels else f" g{self.groups}"
        text += f" @{self.height}x{self.width}"
        if self.batch != 1:
            text += f" n{self.batch}"
        return text


def _resolve_pads(padding, kernel, dilation, stride) -> tuple:
    if isinstance(padding, str):
        if padding.lower() == "valid":
            return (0, 0, 0, 0)
        if padding.lower() == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' needs stride 1")
            th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        raise ValueError(f"unknown padding {padding!r}")
    if isinstance(padding, numbers.Integral):
        return (int(padding),) * 4
    values = tuple(int(v) for v in padding)
    if len(values) == 2:
        return (values[0], values[1], values[0], values[1])
    if len(values) == 4:
        return values
    raise ValueError(f"padding must be an int, a pair or (top, left, bottom, right): {padding!r}")


def geometry(entry: dict) -> Geometry:
    """A suite JSON entry -> Geometry."""
    n, c, h, w = (int(v) for v in entry["input_shape"])
    kernel = _pair(entry["kernel_size"])
    stride = _pair(entry.get("stride", 1))
    dilation = _pair(entry.get("dilation", 1))
    padding = entry.get("padding", 0)
    if isinstance(padding, list):
        padding = tuple(padding)
    pads = _resolve_pads(padding, kernel, dilation, stride)
    return Geometry(str(entry.get("name", "layer")), n, c, h, w, int(entry["out_channels"]),
                    kernel, stride, pads, dilation, int(entry.get("groups", 1)),
                    int(entry.get("count", 1)), padding)


# ---------------------------------------------------------------------------------------------
# numpy im2col + sgemm


def _patches(xp: np.ndarray, geo: Geometry) -> np.ndarray:
    """(cg, Hp, Wp) padded image slice -> (cg, kh, kw, OH, OW) view of its receptive fields."""
    kh, kw = geo.kernel
    (sh, sw), (dh, dw) = geo.stride, geo.dilation
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = sliding_window_view(xp, (span_h, span_w), axis=(1, 2))  # (cg, Hp-, Wp-, span_h, span_w)
    win = win[:, ::sh, ::sw, ::dh, ::dw][:, :geo.out_height, :geo.out_width]
    return win.transpose(0, 3, 4, 1, 2)


def _pad(x: np.ndarray, geo: Geometry) -> np.ndarray:
    top, left, bottom, right = geo.pads
    if not any(geo.pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def make_numpy_im2col(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geo: Geometry):
    """Classic im2col (patch matrix kh*kw*cg x OH*OW, copied) and one sgemm per (image, group):
    Y_g (ocg x OH*OW) = W_g (ocg x kh*kw*cg) @ cols_g.  Bias is preloaded into the output and
    the GEMM accumulates onto it (beta = 1).  1x1/stride-1/unpadded layers skip the copy, as
    every classic implementation does."""
    from scipy.linalg.blas import sgemm

    groups, cg = geo.groups, geo.in_channels // geo.groups
    ocg = geo.out_channels // groups
    positions = geo.out_height * geo.out_width
    kdim = cg * geo.kernel[0] * geo.kernel[1]
    # W_g^T as Fortran-ordered (kdim x ocg) views: row-major C = A @ B is column-major
    # C^T = B^T @ A^T, so passing transposed views avoids any copy inside f2py.
    wmat = np.ascontiguousarray(w.reshape(geo.out_channels, kdim))
    w_t = [wmat[g * ocg:(g + 1) * ocg].T for g in range(groups)]
    bias_col = (np.zeros(geo.out_channels, np.float32) if b is None else b)[:, None]
    direct = geo.is_pointwise_direct

    def run():
        out = np.empty(geo.output_shape, np.float32)
        xp = _pad(x, geo)
        for n in range(geo.batch):
            y_n = out[n].reshape(geo.out_channels, positions)
            y_n[...] = bias_col
            for g in range(groups):
                xs = xp[n, g * cg:(g + 1) * cg]
                if direct:
                    cols = xs.reshape(cg, positions)
                else:
                    cols = np.ascontiguousarray(_patches(xs, geo)).reshape(kdim, positions)
                c_t = y_n[g * ocg:(g + 1) * ocg].T  # Fortran view of the output rows
                res = sgemm(1.0, cols.T, w_t[g], beta=1.0, c=c_t, overwrite_c=1)
                if res.base is not y_n and not np.shares_memory(res, y_n):
                    c_t[...] = res  # f2py had to copy: keep the result anyway
        return out

    return run


def reference_float64(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geo: Geometry) -> np.ndarray:
    """The convolution in float64 (im2col + numpy matmul): the reference when torch is absent."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    groups, cg = geo.groups, geo.in_channels // geo.groups
    ocg = geo.out_channels // groups
    positions = geo.out_height * geo.out_width
    kdim = cg * geo.kernel[0] * geo.kernel[1]
    wmat = w64.reshape(geo.out_channels, kdim)
    out = np.empty(geo.output_shape, np.float64)
    xp = _pad(x64, geo)
    for n in range(geo.batch):
        y_n = out[n].reshape(geo.out_channels, positions)
        for g in range(groups):
            cols = _patches(xp[n, g * cg:(g + 1) * cg], geo).reshape(kdim, positions)
            y_n[g * ocg:(g + 1) * ocg] = wmat[g * ocg:(g + 1) * ocg] @ cols
        if b is not None:
            y_n += b.astype(np.float64)[:, None]
    return out


# ---------------------------------------------------------------------------------------------
# holding the peers to one ISA

# Each library reads its own switch once, when it loads: oneDNN (torch's convolutions that it
# takes), MKL (the NCHW convolutions oneDNN does not take, 1x1 among them, are an MKL sgemm in
# torch's x86 wheels: without this switch they keep AVX-512) and OpenBLAS (the numpy peer and
# scipy).  ONNX Runtime's MLAS has no switch: it stays at the CPU's best ISA.
PEER_ISA_SWITCHES = {
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "OPENBLAS_CORETYPE": "Haswell"},
}


def hold_peers_to_isa(isa: str | None) -> dict:
    """Set the switches that hold the peers to `isa` (those the caller has not set already),
    before torch, onnxruntime or scipy load; returns the switches in force.  No-op (empty dict)
    for an ISA without switches (the CPU's best, scalar)."""
    import os

    switches = PEER_ISA_SWITCHES.get((isa or "").strip().lower(), {})
    for name, value in switches.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in switches}


# ---------------------------------------------------------------------------------------------
# torch


def torch_module():
    try:
        import torch
    except Exception:  # noqa: BLE001 - any import failure just means "no torch peer"
        return None
    return torch


def make_torch(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geo: Geometry, *,
               channels_last: bool):
    torch = torch_module()
    F = torch.nn.functional
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    bt = None if b is None else torch.from_numpy(b)
    if channels_last:
        # Converted once, outside timing: a channels_last network keeps its tensors that way.
        xt = xt.contiguous(memory_format=torch.channels_last)
        wt = wt.contiguous(memory_format=torch.channels_last)
    stride, dilation, groups = tuple(geo.stride), tuple(geo.dilation), geo.groups
    if geo.symmetric_padding:
        padding = (geo.pads[0], geo.pads[1])

        def run():
            with torch.no_grad():
                return F.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    else:
        # torch's conv2d takes symmetric padding only: pad explicitly (counted, like ORT's pads).
        top, left, bottom, right = geo.pads

        def run():
            with torch.no_grad():
                return F.conv2d(F.pad(xt, (left, right, top, bottom)), wt, bt, stride, 0,
                                dilation, groups)
    return run


# ---------------------------------------------------------------------------------------------
# onnxruntime


def ort_module():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except Exception:  # noqa: BLE001
        return None
    return onnxruntime


def make_onnxruntime(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geo: Geometry,
                     threads: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    ort = ort_module()

    inputs = ["x", "w"] + (["b"] if b is not None else [])
    node = helper.make_node("Conv", inputs, ["y"], kernel_shape=list(geo.kernel),
                            strides=list(geo.stride), dilations=list(geo.dilation),
                            pads=list(geo.pads), group=geo.groups)
    inits = [numpy_helper.from_array(w, "w")]
    if b is not None:
        inits.append(numpy_helper.from_array(b, "b"))
    graph = helper.make_graph(
        [node], geo.name.replace(".", "_") or "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(geo.output_shape))],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)  # older runtimes refuse newer IR versions
    onnx.checker.check_model(model)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 1:
        # Spinning workers would keep burning the cores while the next contender runs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    out = np.empty(geo.output_shape, np.float32)
    binding = sess.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_output("y", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)

    def run():
        sess.run_with_iobinding(binding)
        return out

    return run


def to_numpy(result) -> np.ndarray:
    """Any contender's output -> contiguous float NCHW numpy array."""
    if hasattr(result, "detach"):
        result = result.detach().contiguous().numpy()
    return np.ascontiguousarray(result)
