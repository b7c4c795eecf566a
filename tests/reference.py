"""Test oracle: direct 2-D convolution in plain NumPy with float64 accumulation.

Written from the definition of torch.nn.functional.conv2d, independently of im2row: it shares no
code with the library (no spec parsing, no plans).  One loop over kernel taps; each tap is a
batched matrix product over (batch, group, output positions):

    y[n, g*OCg + o, r, c] = b[g*OCg + o]
        + sum_{ci < Cg, i < kh, j < kw} w[g*OCg + o, ci, i, j]
                                       * xpad[n, g*Cg + ci, r*sh + i*dh, c*sw + j*dw]

padding: int, (ph, pw), (top, left, bottom, right), 'valid' or 'same' (stride 1 only; the odd
extra row/column goes to the bottom/right, as torch does).
"""
from __future__ import annotations

import numpy as np


def _two(value):
    if np.ndim(value) == 0:
        return int(value), int(value)
    a, b = value
    return int(a), int(b)


def explicit_padding(padding, kernel, dilation) -> tuple:
    """Any accepted padding form -> (top, left, bottom, right)."""
    kh, kw = kernel
    dh, dw = dilation
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            th, tw = dh * (kh - 1), dw * (kw - 1)
            return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        raise ValueError(padding)
    if np.ndim(padding) == 0:
        p = int(padding)
        return (p, p, p, p)
    values = tuple(int(v) for v in padding)
    if len(values) == 2:
        return (values[0], values[1], values[0], values[1])
    assert len(values) == 4
    return values


def conv2d_reference(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                     layout="NCHW"):
    """float64 result of torch.nn.functional.conv2d(x, weight, bias, ...).

    x: (N, C, H, W) or unbatched (C, H, W); with layout='NHWC', (N, H, W, C) / (H, W, C), and the
    result is channels-last too.  Any real dtype; computed in float64."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    assert cg * groups == c and oc % groups == 0
    sh, sw = _two(stride)
    dh, dw = _two(dilation)
    top, left, bottom, right = explicit_padding(padding, (kh, kw), (dh, dw))

    xp = np.zeros((n, c, h + top + bottom, wd + left + right))
    xp[:, :, top:top + h, left:left + wd] = x
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    assert oh >= 1 and ow >= 1

    ocg = oc // groups
    wg = w.reshape(groups, ocg, cg, kh, kw)
    y = np.zeros((n, groups, ocg, oh * ow))
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            taps = xp[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw]
            taps = taps.reshape(n, groups, cg, oh * ow)
            # (groups, OCg, Cg) @ (N, groups, Cg, P) -> (N, groups, OCg, P)
            y += np.matmul(wg[:, :, :, i, j], taps)
    y = y.reshape(n, oc, oh, ow)
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64).reshape(1, oc, 1, 1)
    if layout == "NHWC":
        y = y.transpose(0, 2, 3, 1)
    if unbatched:
        y = y[0]
    return np.ascontiguousarray(y)


def conv2d_naive(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Scalar loops straight from the definition (NCHW, batched).  Tiny shapes only: it checks
    the vectorised reference where torch is not installed."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    sh, sw = _two(stride)
    dh, dw = _two(dilation)
    top, left, bottom, right = explicit_padding(padding, (kh, kw), (dh, dw))
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    ocg = oc // groups
    y = np.zeros((n, oc, oh, ow))
    for b in range(n):
        for o in range(oc):
            g = o // ocg
            for r in range(oh):
                for q in range(ow):
                    acc = 0.0 if bias is None else float(bias[o])
                    for ci in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                hh = r * sh + i * dh - top
                                ww = q * sw + j * dw - left
                                if 0 <= hh < h and 0 <= ww < wd:
                                    acc += w[o, ci, i, j] * x[b, g * cg + ci, hh, ww]
                    y[b, o, r, q] = acc
    return y
