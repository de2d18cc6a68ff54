"""Conv + instance norm + activation fused on the CPU, with as few passes over the activations as the algebra allows.

Unfused, a ConvNormAct block on the CPU makes five passes over its output: the conv writes it, the stencil reads
and rewrites it, the norm reads it for its statistics, reads it again to write a new normalised tensor, and the
activation rewrites that. Fused (lean conv, ``InstanceNorm``, ReLU/LeakyReLU/none):

- the stencil pass, which already touches every output voxel, also sums the output and its square per (n, c);
- the norm's affine map and the activation are one pass, in place in inference (nothing else reads the
  pre-norm output) and into the block's output in training;
- training keeps only the block's input (which the conv needs anyway) and the (N, C) statistics: backward
  recomputes the pre-norm output with one more lean conv forward (cheap next to the backward), then needs two
  passes for the norm and activation: one for the two sums the norm's gradient needs, one that writes the
  gradient of the conv's output in place of the recomputed output.

Inference (``torch.is_grad_enabled()`` false, or nothing requires a gradient) keeps nothing for backward. In the
decoder, the concatenation [skip, up(x)] before the first conv is never built: the conv's 1x1 is split into
its skip and up columns, the up columns are applied on the coarse grid before the (linear) interpolation, and
the skip columns are added by one GEMM into the interpolated output (beta = 1), and the stencil, which only
reads the skip channels, follows. Every fused path equals the unfused composition up to rounding (tests/nn).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.nn import _cext
from leanseg.nn._cpu import _gemm, conv_backward, conv_forward, stencil_gather_
from leanseg.nn.lean_conv import LeanConv
from leanseg.nn.norm import InstanceNorm, channel_sums, norm_act_, norm_act_grad_, norm_act_grad_sums, norm_coefficients

ENABLED = True  # tests switch it off to compare with the unfused composition


def act_slope(act: nn.Module) -> float | None:
    """The negative slope of a piecewise-linear activation (1 for none), or None when the kernels cannot fuse it."""
    if isinstance(act, nn.LeakyReLU):
        return float(act.negative_slope)
    if isinstance(act, nn.ReLU):
        return 0.0
    if isinstance(act, nn.Identity):
        return 1.0
    return None


def _needs_grad(x: torch.Tensor, module: nn.Module) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))


def _lib(x: torch.Tensor):
    if not ENABLED or x.device.type != "cpu" or x.dim() not in (4, 5) or _cext.suffix(x.dtype) is None:
        return None
    return _cext.load()


def _cl(t: torch.Tensor) -> torch.Tensor:
    """(N, *spatial, C) contiguous view of t (a copy only when t is not channels-last)."""
    return t.movedim(1, -1).contiguous()


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(N, V, C) view of a contiguous (N, *spatial, C) tensor."""
    return t.view(t.shape[0], -1, t.shape[-1])


def _plain(x: torch.Tensor, module: nn.Module) -> bool:
    """Parameters of x's dtype, and no hooks on the submodules (a hook expects its module's forward to run:
    counting multiply-adds, profiling): otherwise the unfused composition runs."""
    return all(p.dtype == x.dtype for p in module.parameters()) and not any(
        m._forward_hooks or m._forward_pre_hooks for m in list(module.modules())[1:])


def conv_norm_act(block, x: torch.Tensor) -> torch.Tensor | None:
    """block(x) for a ConvNormAct block, fused; None when this block or input has no fused path here."""
    conv, norm, slope = block.conv, block.norm, act_slope(block.act)
    lib = _lib(x)
    if lib is None or slope is None or type(norm) is not InstanceNorm or not _plain(x, block):
        return None
    if _needs_grad(x, block):
        if type(conv) is not LeanConv or conv.bias is not None:
            return None
        return _ConvNormActCPU.apply(x, conv.weight, conv.stencil, norm.weight, norm.bias, conv.stride, norm.eps,
                                     slope, lib)
    if type(conv) is LeanConv:
        z, s1, s2 = conv_forward(_cl(x), conv.weight, conv.stencil.t().contiguous(), conv.bias, conv.stride,
                                 stats=True)  # (N, *out, C_out)
    else:  # the dense first conv: its output is channels-last when x is
        z = _cl(conv(x))
        s1, s2 = channel_sums(lib, _flat(z), _flat(z))
    return _normalise_(lib, z, s1, s2, norm, slope)


def _normalise_(lib, z, s1, s2, norm, slope) -> torch.Tensor:
    """act(norm(z)) in place for z (N, *spatial, C) contiguous with its sums; returns it as (N, C, *spatial)."""
    zf = _flat(z)
    _, _, scale, shift = norm_coefficients(s1, s2, zf.shape[1], norm.weight, norm.bias, norm.eps)
    norm_act_(lib, zf, zf, scale, shift, slope)
    return z.movedim(-1, 1)


def up_merge(block, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor | None:
    """block.fuse(cat([skip, interp(block.up(x))])) for an UpBlock in inference, without the concatenation;
    None when there is no fused path (training, transposed up, a stencil that would read the up channels)."""
    fuse = block.fuse
    conv, cs = fuse.conv, skip.shape[1]
    slope = act_slope(fuse.act)
    lib = _lib(skip)
    if (lib is None or block.mode != "interp" or slope is None or type(conv) is not LeanConv
            or type(fuse.norm) is not InstanceNorm or conv.stencil.shape[0] > cs or not _plain(skip, block)
            or _needs_grad(x, block) or _needs_grad(skip, block)):
        return None
    u = block.up(x)  # (N, C_skip, *coarse)
    # the up columns of the 1x1 on the coarse grid: interpolation is linear, so they commute with it
    v = _gemm(_cl(u), conv.weight[:, cs:])  # (N, *coarse, C_out)
    del u
    z = F.interpolate(v.movedim(-1, 1), size=skip.shape[2:], mode=block.interp, align_corners=False)
    del v
    z = _cl(z)  # (N, *skip, C_out); interpolate keeps the channels-last layout, so no copy
    sl = _cl(skip)  # (N, *skip, C_skip)
    z2 = z.view(-1, z.shape[-1])
    z2.addmm_(sl.view(-1, cs), conv.weight[:, :cs].t())  # += the skip columns, in place
    if conv.bias is not None:
        z2 += conv.bias
    s1, s2 = stencil_gather_(z, sl, conv.stencil.t().contiguous(), 1, stats=True)
    return _normalise_(lib, z, s1, s2, fuse.norm, slope)


class _ConvNormActCPU(torch.autograd.Function):
    """act(instance_norm(lean_conv(x))) keeping x and the statistics only (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, stencil, gamma, beta, stride, eps, slope, lib):
        xl = _cl(x)  # (N, *spatial, C_in)
        st = stencil.t().contiguous()  # (2d, m)
        z, s1, s2 = conv_forward(xl, weight, st, None, stride, stats=True)  # (N, *out, C_out)
        zf = _flat(z)
        mean, rstd, scale, shift = norm_coefficients(s1, s2, zf.shape[1], gamma, beta, eps)
        a = torch.empty_like(z)
        norm_act_(lib, _flat(a), zf, scale, shift, slope)
        ctx.save_for_backward(xl, weight, st, gamma, mean, rstd, scale, shift)
        ctx.stride, ctx.slope, ctx.lib = stride, slope, lib
        return a.movedim(-1, 1)  # (N, C_out, *out), channels-last in memory

    @staticmethod
    def backward(ctx, da):
        xl, weight, st, gamma, mean, rstd, scale, shift = ctx.saved_tensors
        lib, slope = ctx.lib, ctx.slope
        z = conv_forward(xl, weight, st, None, ctx.stride)  # the pre-norm output again, (N, *out, C_out)
        zf, daf = _flat(z), _flat(_cl(da))
        count = zf.shape[1]
        sg, sgz = norm_act_grad_sums(lib, daf, zf, scale, shift, slope)
        sgxhat = (sgz - mean * sg) * rstd  # sum of g * xhat per (n, c)
        # dz = scale * (g - mean_v(g) - xhat * mean_v(g * xhat)), written as scale * g + q * z + r
        q = -scale * sgxhat * rstd / count
        r = -scale * sg / count - q * mean
        norm_act_grad_(lib, zf, daf, zf, scale, shift, slope, scale, q, r)  # dz, in place of z
        needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2], False]
        dx, dw, ds, _ = conv_backward(z, xl, weight, st, ctx.stride, needs)
        dgamma = sgxhat.sum(0).to(gamma.dtype) if gamma is not None and ctx.needs_input_grad[3] else None
        dbeta = sg.sum(0).to(gamma.dtype) if gamma is not None and ctx.needs_input_grad[4] else None
        return dx.movedim(-1, 1) if dx is not None else None, dw, ds, dgamma, dbeta, None, None, None, None
