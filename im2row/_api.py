"""Public entry points: Conv2d (planned layer) and conv2d (drop-in functional form)."""
from __future__ import annotations

import threading

import numpy as np

from . import _core, hwinfo
from ._threads import blas_threads, check_threads, get_num_threads
from .plan import Plan, choose_plan, core_spec, scratch_bytes, validate_plan
from .spec import ConvSpec, check_layer_args, make_spec


def _as_float32(name: str, array) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {array.dtype}; convert it with "
                        f"{name}.astype(numpy.float32)")
    return array


def _check_bias(bias, out_channels: int):
    if bias is None:
        return None
    bias = _as_float32("bias", bias)
    if bias.shape != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got {bias.shape}")
    return np.ascontiguousarray(bias)


class _Prepared:
    """A plan, the weights packed for it, and the core's arguments, ready to run."""

    __slots__ = ("plan", "packed", "spec", "_args", "_shared", "_uses_blas", "_blas_owns_threads")

    def __init__(self, spec: ConvSpec, plan: Plan, weight: np.ndarray):
        validate_plan(spec, plan)
        self.plan = plan.resolved()
        self.spec = spec
        kernels = hwinfo.kernel_set(self.plan.isa)
        packed = self.plan.gemm == "packed"
        geometry = core_spec(spec)
        self.packed = _core.pack_weights(geometry, self.plan.algorithm, weight, kernels, packed)
        self._args = (geometry, self.plan.algorithm, max(self.plan.column_block, 1),
                      self.plan.channel_block, self.plan.row_block, kernels, packed, self.packed)
        self._shared = self.plan.parallel == "shared"
        self._uses_blas = not packed and self.plan.algorithm != "depthwise"
        self._blas_owns_threads = self._uses_blas and self.plan.parallel == "blas"

    def run(self, x_nchw: np.ndarray, out_nchw: np.ndarray, bias, threads: int) -> None:
        if not self._uses_blas:
            _core.run(*self._args, bias, x_nchw, out_nchw, threads, self._shared,
                      self.plan.gemm_kc, self.plan.gemm_mc)
            return
        # Never both pools at once: sgemm gets the threads, or ours do and sgemm gets one.
        own = 1 if self._blas_owns_threads else threads
        with blas_threads.limited(threads // own):
            _core.run(*self._args, bias, x_nchw, out_nchw, own, self._shared,
                      self.plan.gemm_kc, self.plan.gemm_mc)


class _ShapeEntry:
    """What a call with one exact input shape needs, so repeated calls skip all checks."""

    __slots__ = ("prepared", "spec", "unbatched", "threads", "result_shape", "nchw_out_shape")

    def __init__(self, prepared: _Prepared, spec: ConvSpec, unbatched: bool, threads: int):
        self.prepared = prepared
        self.threads = threads
        self.spec = spec
        self.unbatched = unbatched
        self.result_shape = spec.output_shape[1:] if unbatched else spec.output_shape
        self.nchw_out_shape = (spec.batch, spec.out_channels, spec.out_height, spec.out_width)


class Conv2d:
    """A convolution layer prepared once and called many times: ``layer(x)``.

    Same arguments and semantics as torch.nn.functional.conv2d (weight (OC, C/groups, kh, kw),
    stride/padding/dilation as int or pair, padding 'same'/'valid' or (top, left, bottom,
    right)), on float32 NumPy arrays.  layout='NHWC' takes and returns channels-last arrays.

    The plan depends on the input's spatial size; pass input_shape to plan up front, or it is
    made on the first call (and kept per input shape).  plan=Plan(...) forces one.
    threads: threads per call (default: im2row.get_num_threads() at call time).
    A Conv2d may be called from several Python threads at once."""

    def __init__(self, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
                 layout="NCHW", input_shape=None, plan: Plan | None = None, threads=None):
        self.threads = None if threads is None else check_threads(threads)
        weight = _as_float32("weight", weight)
        if weight.ndim != 4:
            raise ValueError(f"weight must be 4-D (out_channels, in_channels/groups, kh, kw), "
                             f"got shape {weight.shape}")
        self.weight = np.ascontiguousarray(weight)
        self.bias = _check_bias(bias, weight.shape[0])
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.layout = layout
        self._forced_plan = plan
        self._prepared: dict = {}    # (per-image spec, plan) -> _Prepared (shared across batches)
        self._entries: dict = {}     # (exact input shape, threads) -> _ShapeEntry
        self._last: _ShapeEntry | None = None
        self._lock = threading.Lock()
        check_layer_args(self.weight.shape, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, layout=layout)
        if input_shape is not None:
            self._entry(tuple(int(v) for v in input_shape), self._threads())

    @classmethod
    def from_spec(cls, spec: ConvSpec, weight, bias=None, *, plan: Plan | None = None,
                  threads=None) -> "Conv2d":
        """The layer a ConvSpec describes (stride, padding, dilation, groups, layout), planned
        for its input shape."""
        return cls(weight, bias, stride=(spec.stride_h, spec.stride_w),
                   padding=(spec.pad_top, spec.pad_left, spec.pad_bottom, spec.pad_right),
                   dilation=(spec.dilation_h, spec.dilation_w), groups=spec.groups,
                   layout=spec.layout, input_shape=spec.input_shape, plan=plan, threads=threads)

    def _spec_for(self, shape: tuple) -> ConvSpec:
        return make_spec(shape, self.weight.shape, stride=self.stride, padding=self.padding,
                         dilation=self.dilation, groups=self.groups, layout=self.layout)

    def _threads(self) -> int:
        return self.threads if self.threads is not None else get_num_threads()

    def _entry(self, shape: tuple, threads: int) -> _ShapeEntry:
        """Plan for an input shape (3-D unbatched or 4-D) at a thread count, checking it once.
        The plan depends on the threads: they change the workspace and the best split."""
        entry = self._entries.get((shape, threads))
        if entry is None:
            if len(shape) not in (3, 4):
                raise ValueError(f"input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {shape}")
            unbatched = len(shape) == 3
            spec = self._spec_for((1,) + shape if unbatched else shape)
            key = spec.with_batch(1)
            plan = self._forced_plan or choose_plan(key, threads)
            with self._lock:
                prepared = self._prepared.get((key, plan))
                if prepared is None:
                    prepared = _Prepared(key, plan, self.weight)
                    self._prepared[key, plan] = prepared
                entry = _ShapeEntry(prepared, spec, unbatched, threads)
                self._entries[shape, threads] = entry
        self._last = entry
        return entry

    # -- introspection --------------------------------------------------------------------
    @property
    def plan(self) -> Plan | None:
        """The plan of the last input shape seen (None before any)."""
        return self._last.prepared.plan if self._last else None

    @property
    def workspace_bytes(self) -> int | None:
        """Scratch a call of the last input shape holds beyond inputs, weights, packed weights
        and output, at this layer's thread count.  NHWC calls add the channels-first copies
        of input and output."""
        if self._last is None:
            return None
        spec = self._last.spec
        extra = 0
        if spec.layout == "NHWC":
            extra = 4 * spec.batch * (spec.in_channels * spec.height * spec.width
                                      + spec.out_channels * spec.out_height * spec.out_width)
        return scratch_bytes(spec, self._last.prepared.plan, self._last.threads) + extra

    def planned_specs(self) -> list:
        """The per-image (batch 1) shapes this layer has planned so far, first seen first."""
        return list(dict.fromkeys(spec for spec, _ in self._prepared))

    @property
    def packed_weight_bytes(self) -> int | None:
        return None if self._last is None else int(self._last.prepared.packed.nbytes)

    # -- execution ------------------------------------------------------------------------
    def __call__(self, x, *, out=None):
        if type(x) is not np.ndarray or x.dtype != np.float32:
            x = _as_float32("input", x)
        threads = self._threads()
        entry = self._entries.get((x.shape, threads)) or self._entry(x.shape, threads)
        self._last = entry
        if out is not None:
            if not isinstance(out, np.ndarray) or out.dtype != np.float32:
                raise TypeError("out must be a float32 numpy array")
            if out.shape != entry.result_shape:
                raise ValueError(f"out must have shape {entry.result_shape}, got {out.shape}")
            if not out.flags.writeable:
                raise ValueError("out is read-only")
        x4 = x[None] if entry.unbatched else x
        nhwc = entry.spec.layout == "NHWC"
        x_nchw = np.ascontiguousarray(x4.transpose(0, 3, 1, 2) if nhwc else x4)
        # Write straight into `out` unless it needs a layout change or aliases the input
        # (the GEMM would read what it already overwrote).
        if (out is not None and not nhwc and out.flags.c_contiguous
                and not np.may_share_memory(out, x_nchw)):
            out_nchw = out.reshape(entry.nchw_out_shape)
            direct = True
        else:
            out_nchw = np.empty(entry.nchw_out_shape, dtype=np.float32)
            direct = False
        entry.prepared.run(x_nchw, out_nchw, self.bias, threads)
        result = out_nchw.transpose(0, 2, 3, 1) if nhwc else out_nchw
        if entry.unbatched:
            result = result[0]
        if out is not None:
            if not direct:
                out[...] = result
            return out
        return np.ascontiguousarray(result) if nhwc else result

    def __repr__(self) -> str:
        oc, cg, kh, kw = self.weight.shape
        return (f"Conv2d({cg * self.groups}, {oc}, kernel_size=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding!r}, dilation={self.dilation}, groups={self.groups}, "
                f"layout={self.layout!r}, plan={self.plan})")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NCHW",
           out=None, plan: Plan | None = None, threads=None):
    """torch.nn.functional.conv2d on float32 NumPy arrays, run with the tuned (or default)
    plan for the shape.  See Conv2d for the arguments."""
    x = _as_float32("input", x)
    layer = Conv2d(weight, bias, stride, padding, dilation, groups, layout=layout, plan=plan,
                   threads=threads)
    return layer(x, out=out)
