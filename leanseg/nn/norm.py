"""Instance normalisation that stays channels-last, for 2D and 3D.

nn.InstanceNorm copies a channels-last input to NCDHW (and returns NCDHW, which the next lean convolution copies
back), and PyTorch's reductions over the spatial dims of a channels-last tensor are slow on the CPU: in a lean
network that costs more than the convolutions. On the CPU this module computes the per-(n, c) sums in one pass
and applies the affine map in a second (backward: the same two passes) with the C kernels of _stencil.c; on
other devices, or without a C compiler, it is F.instance_norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.nn import _cext


def _channels_last(x: torch.Tensor) -> torch.Tensor | None:
    """(N, V, C) view of a channels-last x, or None when x is not laid out that way."""
    xl = x.movedim(1, -1)
    return xl.reshape(x.shape[0], -1, x.shape[1]) if xl.is_contiguous() else None


def _sums(lib, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_v a and sum_v a * b per (n, c), float64, for (N, V, C) tensors."""
    n, v, c = a.shape
    threads = torch.get_num_threads()
    partial = torch.zeros(threads, 2, n, c, dtype=torch.float64)
    getattr(lib, f"channel_sums_{_cext.suffix(a.dtype)}")(
        partial.data_ptr(), a.data_ptr(), b.data_ptr(), n, v, c, threads
    )
    total = partial.sum(0)
    return total[0], total[1]


def _affine(lib, out, u, p, r, v=None, q=None) -> None:
    """out = p * u + q * v + r, coefficients per (n, c); tensors (N, V, C), coefficients (N, C) of u's dtype."""
    n, vox, c = u.shape
    p, r = p.to(u.dtype).contiguous(), r.to(u.dtype).contiguous()
    q = q.to(u.dtype).contiguous() if q is not None else None
    getattr(lib, f"affine2_{_cext.suffix(u.dtype)}")(
        out.data_ptr(),
        u.data_ptr(),
        v.data_ptr() if v is not None else None,
        p.data_ptr(),
        q.data_ptr() if q is not None else None,
        r.data_ptr(),
        n,
        vox,
        c,
        torch.get_num_threads(),
    )


class _InstanceNormCL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, lib):
        xl = _channels_last(x)  # (N, V, C)
        s1, s2 = _sums(lib, xl, xl)
        count = xl.shape[1]
        mean = s1 / count
        rstd = torch.rsqrt((s2 / count - mean * mean).clamp_min(0) + eps)  # float64: no cancellation to speak of
        scale = rstd * weight.double() if weight is not None else rstd
        shift = (bias.double() if bias is not None else 0) - mean * scale
        y = torch.empty_like(x)  # same (channels-last) layout as x
        _affine(lib, _channels_last(y), xl, scale, shift)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.lib = lib
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        lib = ctx.lib
        xl = _channels_last(x)
        count = xl.shape[1]
        dyl = _channels_last(dy)
        if dyl is None:
            dy = dy.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
            dyl = _channels_last(dy)
        sdy, sdyx = _sums(lib, dyl, xl)
        sdyxhat = (sdyx - mean * sdy) * rstd  # sum of dy * xhat per (n, c)
        gain = rstd * weight.double() if weight is not None else rstd
        # dx = gain * (dy - mean_v(dy) - xhat * mean_v(dy * xhat)), written as p * dy + q * x + r
        q = -gain * sdyxhat * rstd / count
        r = -gain * sdy / count - q * mean
        dx = torch.empty_like(x)
        _affine(lib, _channels_last(dx), dyl, gain, r, v=xl, q=q)
        dw = sdyxhat.sum(0).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        db = sdy.sum(0).to(weight.dtype) if weight is not None and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None


class InstanceNorm(nn.Module):
    """Instance norm over (N, C, *spatial) in 2D or 3D with learnable per-channel scale and shift (``affine``).

    Same parameters and results as nn.InstanceNorm2d/3d(affine=True, track_running_stats=False); keeps a
    channels-last input channels-last.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lib = _cext.load() if x.device.type == "cpu" and _cext.suffix(x.dtype) else None
        from leanseg.nn.ops import tracing  # tracers cannot follow the C kernel's data pointers

        if lib is not None and x.dim() in (4, 5) and _channels_last(x) is not None and not tracing():
            return _InstanceNormCL.apply(x, self.weight, self.bias, self.eps, lib)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}"
