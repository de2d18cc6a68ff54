"""Conv + instance norm + activation fused on the CPU, with as few passes over the activations as the algebra allows.

Unfused, a ConvNormAct block on the CPU makes five passes over its output: the conv writes it, the stencil reads
and rewrites it, the norm reads it for its statistics, reads it again to write a new normalised tensor, and the
activation rewrites that. Fused (lean conv, ``InstanceNorm``, ReLU/LeakyReLU/none):

- the stencil pass, which already touches every output voxel, also sums the output and its square per (n, c);
- the norm's affine map and the activation are one pass, in place (nothing else reads the pre-norm output);
- training keeps only the block's input (which the conv needs anyway) and the (N, C) statistics: backward
  recomputes the pre-norm output with one more lean conv forward (cheap next to the backward), then needs two
  passes for the norm and activation: one for the two sums the norm's gradient needs, one that writes the
  gradient of the conv's output in place of the recomputed output.

Inference (``torch.is_grad_enabled()`` false, or nothing requires a gradient) keeps nothing for backward. In the
decoder, the concatenation [skip, up(x)] before the first conv is never built: the conv's 1x1 is split into
its skip and up columns, the up columns are applied on the coarse grid before the (linear) interpolation, and
the skip columns are added by one GEMM into the interpolated output (beta = 1), and the stencil, which only
reads the skip channels, follows. In training the same merge is one autograd Function that keeps the coarse
up output, the skip (which the next level's down conv keeps anyway) and the statistics: backward recomputes the
fuse conv's output and returns the gradients of the skip and of the coarse up output directly, so neither the
concatenation nor its gradient is ever built. The dense first block (few input channels) is recomputed the same
way, instead of keeping its output twice (the norm's input and the activation's output). Every fused path equals
the unfused composition up to rounding (tests/nn).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leanseg.nn import backend
from leanseg.nn._cpu import _gemm, conv_backward, conv_forward, stencil_gather_, upsample_linear
from leanseg.nn.lean_conv import LeanConv
from leanseg.nn.norm import InstanceNorm, channel_sums, norm_act_, norm_act_grad_, norm_act_grad_sums, norm_coefficients
from leanseg.nn.ops import tracing

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
    """The C library for a fused block on x, or None (the unfused composition runs): no C backend for x, or a
    tracer (torch.compile/export, ONNX), which sees the unfused composition whose lean convs are one custom op each."""
    if not ENABLED or x.dim() not in (4, 5) or tracing():
        return None
    return backend.c_library(x)


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


def _buffer(out: torch.Tensor | None, like: torch.Tensor, shape) -> torch.Tensor | None:
    """out as a (N, *spatial, C) contiguous view when it is a channels-last tensor of that shape and like's dtype."""
    if out is None or out.dtype != like.dtype or list(out.shape) != [shape[0], shape[-1], *shape[1:-1]]:
        return None
    ol = out.movedim(1, -1)
    return ol if ol.is_contiguous() else None


def conv_norm_act(block, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor | None:
    """block(x) for a ConvNormAct block, fused; None when this block or input has no fused path here.

    out: in inference, a tensor whose memory the caller no longer needs, to hold the result (LeanUNet hands its
    dead activations on this way, so that no new activation-sized block is allocated where one was freed)."""
    conv, norm, slope = block.conv, block.norm, act_slope(block.act)
    lib = _lib(x)
    if lib is None or slope is None or type(norm) is not InstanceNorm or not _plain(x, block):
        return None
    if _needs_grad(x, block):
        if type(conv) is LeanConv and conv.bias is None:
            return _ConvNormActCPU.apply(x, conv.weight, conv.stencil, norm.weight, norm.bias, conv.stride, norm.eps,
                                         slope, lib)
        if _recomputable_dense(conv):
            return _DenseConvNormActCPU.apply(x, conv.weight, norm.weight, norm.bias, conv.stride[0], norm.eps,
                                              slope, lib)
        return None
    if type(conv) is LeanConv:
        z, s1, s2 = conv_forward(_cl(x), conv.weight, conv.stencil.t().contiguous(), conv.bias, conv.stride,
                                 stats=True, out=out.movedim(1, -1) if out is not None else None)  # (N, *out, C)
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


def up_merge(block, x: torch.Tensor, skip: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor | None:
    """block.fuse(cat([skip, interp(block.up(x))])) for an UpBlock, without the concatenation; None when there is
    no fused path (transposed up, a stencil that would read the up channels, a bias in training).
    out: in inference, as for conv_norm_act, a dead tensor of the result's shape to write into."""
    fuse = block.fuse
    conv, cs = fuse.conv, skip.shape[1]
    slope = act_slope(fuse.act)
    lib = _lib(skip)
    if (lib is None or block.mode != "interp" or slope is None or type(conv) is not LeanConv
            or type(fuse.norm) is not InstanceNorm or conv.stencil.shape[0] > cs or not _plain(skip, block)):
        return None
    if _needs_grad(x, block) or _needs_grad(skip, block):
        if conv.bias is not None:
            return None
        # training keeps the coarse up output, the skip (kept anyway: the next level's down conv reads it) and
        # the statistics, instead of the full-resolution concatenation
        return _MergeNormActCPU.apply(block.up(x), skip, conv.weight, conv.stencil, fuse.norm.weight,
                                      fuse.norm.bias, fuse.norm.eps, slope, lib)
    sl = _cl(skip)  # (N, *skip, C_skip)
    z, s1, s2 = _merge_forward(lib, _cl(block.up(x)), sl, conv.weight, conv.stencil.t().contiguous(), conv.bias,
                               out, stats=True)
    return _normalise_(lib, z, s1, s2, fuse.norm, slope)


def _merge_forward(lib, ul, sl, weight, st, bias, out=None, stats: bool = False):
    """The fuse conv of [skip, interp(u)] for channels-last ul (N, *coarse, C_up), sl (N, *skip, C_skip):
    z (N, *skip, C_out) contiguous, and with stats=True its float64 (N, C_out) sums and sums of squares.

    The up columns of the 1x1 run on the coarse grid (interpolation is linear, so they commute with it), the
    skip columns are added by one GEMM into the interpolated output (beta = 1), then the stencil, which reads
    only skip channels. out: a channels-last tensor of z's shape to write into, or None."""
    cs, size = sl.shape[-1], list(sl.shape[1:-1])
    v = _gemm(ul, weight[:, cs:])  # (N, *coarse, C_out)
    zl = _buffer(out, sl, [sl.shape[0], *size, weight.shape[0]])
    z = zl if zl is not None else sl.new_empty([sl.shape[0], *size, weight.shape[0]])  # (N, *skip, C_out)
    # one pass of the C kernel (mode "bilinear"/"trilinear", the only ones an UpBlock uses): ATen's bfloat16
    # kernel took 2.6x as long, its float32 one about 1.2x
    upsample_linear(lib, z, v)
    del v
    z2 = z.view(-1, z.shape[-1])
    z2.addmm_(sl.reshape(-1, cs), weight[:, :cs].t())  # += the skip columns, in place
    if bias is not None:
        z2 += bias
    sums = stencil_gather_(z, sl, st, 1, stats=stats)
    return (z, *sums) if stats else z


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient channels-last contiguous. The gradient a concatenation hands
    back is a strided slice of the concatenated gradient; ATen's interpolation backward turns such a slice into
    NCDHW with a slow transposing copy (6 s of a 2x4x128^3 LeanUNet step), but takes channels-last as it is."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g.contiguous(memory_format=torch.channels_last if g.dim() == 4 else torch.channels_last_3d)


def channels_last_grad(x: torch.Tensor) -> torch.Tensor:
    """x, with its gradient made channels-last contiguous in backward (see _ChannelsLastGrad)."""
    return _ChannelsLastGrad.apply(x) if x.requires_grad and x.dim() in (4, 5) else x


class _ConvNormActCPU(torch.autograd.Function):
    """act(instance_norm(lean_conv(x))) keeping x and the statistics only (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, stencil, gamma, beta, stride, eps, slope, lib):
        xl = _cl(x)  # (N, *spatial, C_in)
        st = stencil.t().contiguous()  # (2d, m)
        z, s1, s2 = conv_forward(xl, weight, st, None, stride, stats=True)  # (N, *out, C_out)
        zf = _flat(z)
        mean, rstd, scale, shift = norm_coefficients(s1, s2, zf.shape[1], gamma, beta, eps)
        norm_act_(lib, zf, zf, scale, shift, slope)  # in place: nothing keeps z
        ctx.save_for_backward(xl, weight, st, gamma, mean, rstd, scale, shift)
        ctx.stride, ctx.slope, ctx.lib = stride, slope, lib
        return z.movedim(-1, 1)  # (N, C_out, *out), channels-last in memory

    @staticmethod
    def backward(ctx, da):
        xl, weight, st, gamma, mean, rstd, scale, shift = ctx.saved_tensors
        z = conv_forward(xl, weight, st, None, ctx.stride)  # the pre-norm output again, (N, *out, C_out)
        sg, sgxhat = _norm_act_backward_(ctx.lib, z, da, mean, rstd, scale, shift, ctx.slope)  # z is now dz
        needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2], False]
        dx, dw, ds, _ = conv_backward(z, xl, weight, st, ctx.stride, needs)
        dgamma, dbeta = _norm_param_grads(ctx, gamma, sg, sgxhat, 3)
        return dx.movedim(-1, 1) if dx is not None else None, dw, ds, dgamma, dbeta, None, None, None, None


def _norm_act_backward_(lib, z, da, mean, rstd, scale, shift, slope):
    """Overwrite z (N, *spatial, C) contiguous, the recomputed pre-norm output, with the gradient of
    act(instance_norm(z)) for the output gradient da (N, C, *spatial); returns the float64 (N, C) sums of g and of
    g * xhat (g: the gradient after the activation), which the norm's weight and bias gradients are."""
    zf, daf = _flat(z), _flat(_cl(da))
    count = zf.shape[1]
    sg, sgz = norm_act_grad_sums(lib, daf, zf, scale, shift, slope)
    sgxhat = (sgz - mean * sg) * rstd  # sum of g * xhat per (n, c)
    # dz = scale * (g - mean_v(g) - xhat * mean_v(g * xhat)), written as scale * g + q * z + r
    q = -scale * sgxhat * rstd / count
    r = -scale * sg / count - q * mean
    norm_act_grad_(lib, zf, daf, zf, scale, shift, slope, scale, q, r)  # dz, in place of z
    return sg, sgxhat


def _norm_param_grads(ctx, gamma, sg, sgxhat, first: int):
    """(dgamma, dbeta) from the sums of _norm_act_backward_; gamma and beta are inputs first and first + 1."""
    dgamma = sgxhat.sum(0).to(gamma.dtype) if gamma is not None and ctx.needs_input_grad[first] else None
    dbeta = sg.sum(0).to(gamma.dtype) if gamma is not None and ctx.needs_input_grad[first + 1] else None
    return dgamma, dbeta


# A dense conv is recomputed in backward instead of keeping its output only where that is cheap: few input
# channels (the first conv of a U-Net, 4 -> 32: 108 multiply-adds per output, like a lean conv from 64 channels)
# and no bias (the norm removes it).
RECOMPUTE_DENSE_MAX_IN = 8


def _recomputable_dense(conv: nn.Module) -> bool:
    return (type(conv) in (nn.Conv2d, nn.Conv3d) and conv.bias is None
            and conv.in_channels <= RECOMPUTE_DENSE_MAX_IN and conv.groups == 1 and conv.padding_mode == "zeros"
            and len(set(conv.stride)) == 1 and conv.dilation == (1,) * len(conv.dilation)
            and conv.padding == tuple(k // 2 for k in conv.kernel_size))


class _DenseConvNormActCPU(torch.autograd.Function):
    """act(instance_norm(dense_conv(x))) keeping x and the statistics only: the first block of a U-Net, whose
    output would otherwise be kept twice (the norm's input and the activation's output)."""

    @staticmethod
    def forward(ctx, x, weight, gamma, beta, stride, eps, slope, lib):
        z = _dense(x, weight, stride)  # (N, *out, C_out)
        zf = _flat(z)
        s1, s2 = channel_sums(lib, zf, zf)
        mean, rstd, scale, shift = norm_coefficients(s1, s2, zf.shape[1], gamma, beta, eps)
        norm_act_(lib, zf, zf, scale, shift, slope)  # in place: nothing keeps z
        ctx.save_for_backward(x, weight, gamma, mean, rstd, scale, shift)
        ctx.stride, ctx.slope, ctx.lib = stride, slope, lib
        return z.movedim(-1, 1)  # (N, C_out, *out), channels-last in memory

    @staticmethod
    def backward(ctx, da):
        x, weight, gamma, mean, rstd, scale, shift = ctx.saved_tensors
        d = x.dim() - 2
        needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
        dx = torch.empty_like(x) if needs[0] else None
        dw = torch.zeros_like(weight) if needs[1] else None
        sums = []
        # One sample at a time: this block's backward comes last, when the heap is at its fullest, and a sample's
        # recomputed output and oneDNN's buffers fit into the holes that freed activations left, where the whole
        # batch's did not (the step's peak memory was here).
        for n in range(x.shape[0]):
            i = slice(n, n + 1)
            z = _dense(x[i], weight, ctx.stride)  # the pre-norm output again
            sums.append(_norm_act_backward_(ctx.lib, z, da[i], mean[i], rstd[i], scale[i], shift[i], ctx.slope))
            gx, gw, _ = torch.ops.aten.convolution_backward(
                z.movedim(-1, 1), x[i], weight, None, [ctx.stride] * d, [k // 2 for k in weight.shape[2:]],
                [1] * d, False, [0] * d, 1, needs)
            del z
            if dx is not None:
                dx[i] = gx
            if dw is not None:
                dw += gw
        sg, sgxhat = (torch.cat(t) for t in zip(*sums, strict=True))
        dgamma, dbeta = _norm_param_grads(ctx, gamma, sg, sgxhat, 2)
        return dx, dw, dgamma, dbeta, None, None, None, None


def _dense(x, weight, stride: int) -> torch.Tensor:
    """The dense conv's output as (N, *out, C_out) contiguous (channels-last when x is)."""
    conv = F.conv3d if x.dim() == 5 else F.conv2d
    return _cl(conv(x, weight, None, stride, [k // 2 for k in weight.shape[2:]]))


_UPSAMPLE_GRAD = {2: "upsample_bilinear2d_backward", 3: "upsample_trilinear3d_backward"}


class _MergeNormActCPU(torch.autograd.Function):
    """act(instance_norm(fuse_conv(cat([skip, interp(u)])))) for an UpBlock in training, keeping u (the coarse
    up output), the skip and the statistics: backward recomputes the pre-norm output (_merge_forward) and never
    builds the concatenation or its gradient, only the skip's and the coarse u's."""

    @staticmethod
    def forward(ctx, u, skip, weight, stencil, gamma, beta, eps, slope, lib):
        ul, sl = _cl(u), _cl(skip)  # (N, *coarse, C_up), (N, *skip, C_skip)
        st = stencil.t().contiguous()  # (2d, m)
        z, s1, s2 = _merge_forward(lib, ul, sl, weight, st, None, stats=True)  # (N, *skip, C_out)
        zf = _flat(z)
        mean, rstd, scale, shift = norm_coefficients(s1, s2, zf.shape[1], gamma, beta, eps)
        norm_act_(lib, zf, zf, scale, shift, slope)  # in place: nothing keeps z
        ctx.save_for_backward(ul, sl, weight, st, gamma, mean, rstd, scale, shift)
        ctx.slope, ctx.lib = slope, lib
        return z.movedim(-1, 1)  # (N, C_out, *skip), channels-last in memory

    @staticmethod
    def backward(ctx, da):
        ul, sl, weight, st, gamma, mean, rstd, scale, shift = ctx.saved_tensors
        cs, d = sl.shape[-1], sl.dim() - 2
        z = _merge_forward(ctx.lib, ul, sl, weight, st, None)
        sg, sgxhat = _norm_act_backward_(ctx.lib, z, da, mean, rstd, scale, shift, ctx.slope)  # z is now dz
        # the skip columns and the stencil: a lean conv of the skip
        needs = [ctx.needs_input_grad[1], ctx.needs_input_grad[2], ctx.needs_input_grad[3], False]
        dskip, dw_skip, ds, _ = conv_backward(z, sl, weight[:, :cs].contiguous(), st, 1, needs)
        # the up columns: back through the interpolation to the coarse grid, then a GEMM there
        dv = getattr(torch.ops.aten, _UPSAMPLE_GRAD[d])(z.movedim(-1, 1), list(sl.shape[1:-1]),
                                                      [ul.shape[0], weight.shape[0], *ul.shape[1:-1]], False)
        del z
        dvl = _cl(dv)  # (N, *coarse, C_out)
        du = _gemm(dvl, weight[:, cs:].t()) if ctx.needs_input_grad[0] else None  # (N, *coarse, C_up)
        dw = None
        if ctx.needs_input_grad[2]:
            dw_up = dvl.reshape(-1, dvl.shape[-1]).t() @ ul.reshape(-1, ul.shape[-1])
            dw = torch.cat([dw_skip, dw_up], dim=1)
        dgamma, dbeta = _norm_param_grads(ctx, gamma, sg, sgxhat, 4)
        return (du.movedim(-1, 1) if du is not None else None, dskip.movedim(-1, 1) if dskip is not None else None,
                dw, ds, dgamma, dbeta, None, None, None)
