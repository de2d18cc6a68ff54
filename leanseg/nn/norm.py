"""Instance normalisation that stays channels-last, for 2D and 3D.

nn.InstanceNorm copies a channels-last input to NCDHW (and returns NCDHW, which the next lean convolution copies
back), and PyTorch's reductions over the spatial dims of a channels-last tensor are slow on the CPU: in a lean
network that costs more than the convolutions. On the CPU this module computes the per-(n, c) sums in one pass
and applies the affine map in a second (backward: the same two passes) with the C kernels of csrc/norm_act.c; on
other devices, without a C compiler, or under LEANSEG_BACKEND=reference (see leanseg.nn.backend), it is
F.instance_norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.nn import _cext, backend


def _channels_last(x: torch.Tensor) -> torch.Tensor | None:
    """(N, V, C) view of a channels-last x, or None when x is not laid out that way."""
    xl = x.movedim(1, -1)
    return xl.reshape(x.shape[0], -1, x.shape[1]) if xl.is_contiguous() else None


def channel_sums(lib, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_v a and sum_v a * b per (n, c), float64, for (N, V, C) tensors."""
    n, v, c = a.shape
    threads = _cext.threads(a.numel())
    partial = torch.zeros(threads, 2, n, c, dtype=torch.float64)
    getattr(lib, f"channel_sums_{_cext.suffix(a.dtype)}")(
        partial.data_ptr(), a.data_ptr(), b.data_ptr(), n, v, c, threads
    )
    total = partial.sum(0)
    return total[0], total[1]


def _affine(lib, out, u, p, r, v=None, q=None) -> None:
    """out = p * u + q * v + r, coefficients per (n, c); tensors (N, V, C), coefficients (N, C) (float64 is fine)."""
    n, vox, c = u.shape
    acc = _cext.acc_dtype(u.dtype)
    p, r = p.to(acc).contiguous(), r.to(acc).contiguous()
    q = q.to(acc).contiguous() if q is not None else None
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
        _cext.threads(u.numel()),
    )


def norm_coefficients(s1, s2, count: int, weight, bias, eps: float):
    """From the float64 (N, C) sums and sums of squares of `count` voxels: mean, 1/std and the affine map
    y = scale * x + shift of the normalised (and scaled, shifted) output, all float64 (N, C)."""
    mean = s1 / count
    rstd = torch.rsqrt((s2 / count - mean * mean).clamp_min(0) + eps)  # float64: no cancellation to speak of
    scale = rstd * weight.double() if weight is not None else rstd
    shift = (bias.double() if bias is not None else 0) - mean * scale
    return mean, rstd, scale, shift


def _coef(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, C) coefficients in the accumulator type of the C kernels for data of like's dtype."""
    return t.to(_cext.acc_dtype(like.dtype)).contiguous()


def norm_act_(lib, out, u, scale, shift, slope: float) -> None:
    """out = act(scale * u + shift) for (N, V, C) views, act(t) = t if t > 0 else slope * t; out may be u."""
    n, v, c = u.shape
    p, r = _coef(scale, u), _coef(shift, u)  # named: a temporary's memory would be freed before the call
    getattr(lib, f"norm_act_{_cext.suffix(u.dtype)}")(
        out.data_ptr(), u.data_ptr(), p.data_ptr(), r.data_ptr(), slope, n, v, c, _cext.threads(u.numel())
    )


def norm_act_grad_sums(lib, da, z, scale, shift, slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    """With g = da * act'(scale * z + shift): float64 (N, C) sums of g and of g * z, for (N, V, C) views."""
    n, v, c = z.shape
    threads = _cext.threads(z.numel())
    partial = torch.zeros(threads, 2, n, c, dtype=torch.float64)
    p, r = _coef(scale, z), _coef(shift, z)
    getattr(lib, f"norm_act_grad_sums_{_cext.suffix(z.dtype)}")(
        partial.data_ptr(), da.data_ptr(), z.data_ptr(), p.data_ptr(), r.data_ptr(), slope, n, v, c, threads
    )
    total = partial.sum(0)
    return total[0], total[1]


def norm_act_grad_(lib, out, da, z, scale, shift, slope: float, p, q, r) -> None:
    """out = p * g + q * z + r with g = da * act'(scale * z + shift), (N, V, C) views; out may be da or z."""
    n, v, c = z.shape
    coefs = [_coef(t, z) for t in (scale, shift, p, q, r)]
    getattr(lib, f"norm_act_grad_{_cext.suffix(z.dtype)}")(
        out.data_ptr(), da.data_ptr(), z.data_ptr(), coefs[0].data_ptr(), coefs[1].data_ptr(), slope,
        *[t.data_ptr() for t in coefs[2:]], n, v, c, _cext.threads(z.numel()),
    )


class _InstanceNormCL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, lib):
        xl = _channels_last(x)  # (N, V, C)
        s1, s2 = channel_sums(lib, xl, xl)
        mean, rstd, scale, shift = norm_coefficients(s1, s2, xl.shape[1], weight, bias, eps)
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
        sdy, sdyx = channel_sums(lib, dyl, xl)
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
        from leanseg.nn.ops import tracing  # tracers cannot follow the C kernel's data pointers

        lib = backend.c_library(x) if x.dim() in (4, 5) and not tracing() else None
        if lib is not None and _channels_last(x) is not None:
            return _InstanceNormCL.apply(x, self.weight, self.bias, self.eps, lib)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}"
