"""The lean convolution's shape rules and its plain-PyTorch reference: the leaf both sides import.

For x with C_in channels on a d-dimensional grid (d = 2 or 3), a 1x1 weight W (C_out, C_in) and neighbour
weights S (m, 2d) with m = min(C_in, C_out):

    y_o(p) = sum_c W[o, c] x_c(s p) + sum_k S[o, k] x_o(s p + e_k)      (second sum only for o < m)

e_k are the unit offsets (-axis0, +axis0, -axis1, +axis1[, -axis2, +axis2]); zero padding; stride s in {1, 2}.
The diagonal W[o, o] is the stencil's centre, so a square layer has C^2 + 2dC weights.

This module imports only torch: ``leanseg.nn`` (the dispatcher, the CPU path) and ``kernels3d.fused`` (the
Triton kernels) both build on it, and neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

STRIDES = (1, 2)


def check_args(
    x: torch.Tensor, weight: torch.Tensor, stencil: torch.Tensor, bias: torch.Tensor | None, stride: int
) -> int:
    """Validate shapes and return the number of spatial dims. Raises ValueError naming the argument."""
    if weight.dim() != 2:
        raise ValueError(f"weight must have shape (C_out, C_in), got {tuple(weight.shape)}")
    c_out, c_in = weight.shape
    d = stencil.shape[-1] // 2 if stencil.dim() == 2 else -1
    if d not in (2, 3) or stencil.shape != (min(c_in, c_out), 2 * d):
        raise ValueError(f"stencil must have shape ({min(c_in, c_out)}, 4 or 6), got {tuple(stencil.shape)}")
    if x.dim() != d + 2:
        raise ValueError(
            f"input must have {d + 2} dims (N, C, {'D, ' if d == 3 else ''}H, W), got shape {tuple(x.shape)}"
        )
    if x.shape[1] != c_in:
        raise ValueError(f"input has {x.shape[1]} channels, the layer expects in_channels={c_in}")
    if stride not in STRIDES:
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},), got {tuple(bias.shape)}")
    return d


def out_size(n: int, stride: int) -> int:
    """Output length of a 3-tap, padding-1 convolution: positions s*p for p < ceil(n / s)."""
    return (n - 1) // stride + 1


def shifted(xp: torch.Tensor, axis: int, sign: int, stride: int, out_shape: Sequence[int]) -> torch.Tensor:
    """View of the zero-padded channels-last tensor xp (N, *spatial+2, C) at s*p + sign*e_axis, p in out_shape."""
    index: list[slice] = [slice(None)]
    for b, n in enumerate(out_shape):
        start = 1 + (sign if b == axis else 0)
        index.append(slice(start, start + stride * (n - 1) + 1, stride))
    return xp[tuple(index)]


def stencil_channels_last(
    x: torch.Tensor, stencil_t: torch.Tensor, stride: int, out_shape: Sequence[int]
) -> torch.Tensor:
    """sum_k S[:, k] * x(s p + e_k) for channels-last x (N, *spatial, m); stencil_t is S transposed, (2d, m)."""
    d = x.dim() - 2
    xp = F.pad(x, (0, 0) + (1, 1) * d)
    acc = shifted(xp, 0, -1, stride, out_shape) * stencil_t[0]
    for k in range(1, 2 * d):
        acc = acc + shifted(xp, k // 2, -1 if k % 2 == 0 else 1, stride, out_shape) * stencil_t[k]
    return acc


def lean_conv_reference_unchecked(
    x: torch.Tensor, weight: torch.Tensor, stencil: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """lean_conv_reference for arguments that already passed check_args (the dispatcher's fallback)."""
    d = x.dim() - 2
    m = stencil.shape[0]
    xl = x.movedim(1, -1)  # (N, *spatial, C_in)
    xs = xl[(slice(None),) + (slice(None, None, stride),) * d]
    out_shape = xs.shape[1:-1]
    y = torch.matmul(xs, weight.t())  # (N, *out, C_out)
    s = stencil_channels_last(xl[..., :m], stencil.t(), stride, out_shape)
    y = torch.cat([y[..., :m] + s, y[..., m:]], dim=-1)
    if bias is not None:
        y = y + bias
    return y.movedim(-1, 1)


def lean_conv_reference(
    x: torch.Tensor, weight: torch.Tensor, stencil: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """Plain-PyTorch lean convolution (any dtype, float64 included; autograd by PyTorch). x is (N, C, *spatial)."""
    check_args(x, weight, stencil, bias, stride)
    return lean_conv_reference_unchecked(x, weight, stencil, bias, stride)


def dense_weight(weight: torch.Tensor, stencil: torch.Tensor) -> torch.Tensor:
    """The equivalent dense kernel (C_out, C_in, 3, 3[, 3]) for F.conv2d/conv3d with padding=1."""
    c_out, c_in = weight.shape
    d = stencil.shape[1] // 2
    k = weight.new_zeros((c_out, c_in) + (3,) * d)
    centre = (slice(None), slice(None)) + (1,) * d
    k[centre] = weight
    o = torch.arange(stencil.shape[0], device=weight.device)
    for j in range(2 * d):
        tap = [1] * d
        tap[j // 2] = 0 if j % 2 == 0 else 2
        k[(o, o) + tuple(tap)] = stencil[:, j]
    return k
