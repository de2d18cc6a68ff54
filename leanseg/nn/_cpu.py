"""Fast CPU path of the lean convolution: channels-last, the 1x1 as one GEMM, the stencil as one pass.

The GEMMs go to BLAS through torch; the stencil, its adjoints and the dS reduction run in the small C kernels
of csrc/ (declared in csrc/leanseg_cpu.h), which update the GEMM's output in place, reading each input voxel's
neighbours while they are in cache. Up to 64 channels the 1x1 and the stencil are one pass of a C kernel instead
(in float32 on AVX-512 CPUs, lean_tile_f32; up to 32 channels the weight gradients too, lean_wgrad_f32, and at
stride 1 dx with them, lean_bwd_f32). Where no C compiler is available the same operations run as plain PyTorch
(correct, slower).
"""

from __future__ import annotations

import ctypes
import math

import torch

from kernels3d.reference import shifted, stencil_channels_last
from leanseg.nn import _cext, backend


def _taps(d: int, adjoint: bool):
    """(axis, sign) of the 2d taps in the order of S's columns, axes counted in the (D, H, W) view."""
    axis = [a + 3 - d for a in range(d) for _ in (0, 1)]
    sign = [s * (-1 if adjoint else 1) for _ in range(d) for s in (-1, 1)]
    return (ctypes.c_int64 * (2 * d))(*axis), (ctypes.c_int64 * (2 * d))(*sign)


def _grid(t: torch.Tensor) -> _cext.Grid:
    """Geometry of a channels-last (N, *spatial, C') view whose voxels are densely packed, ld >= C' apart.

    Strides of size-1 dims are arbitrary in PyTorch (a 1-channel or depth-1 tensor), so only dims longer than
    one are checked.
    """
    sizes, strides = list(t.shape[:-1]), list(t.stride()[:-1])  # (N, *spatial)
    inner = [math.prod(sizes[i + 1 :]) for i in range(len(sizes))]
    longer = [i for i, n in enumerate(sizes) if n > 1]
    ld = strides[longer[-1]] // inner[longer[-1]] if longer else t.shape[-1]
    packed = all(strides[i] == ld * inner[i] for i in longer) and ld >= t.shape[-1]
    if not packed or (t.shape[-1] > 1 and t.stride(-1) != 1):
        raise RuntimeError(f"lean_conv CPU kernel needs densely packed channels-last data, got strides {t.stride()}")
    sp = [1] * (5 - t.dim()) + sizes[1:]  # 2D is the depth-1 case
    return _cext.Grid(sizes[0], sp[0], sp[1], sp[2], ld)


def _use_c(t: torch.Tensor):
    """The C library for kernels on t, or None: the same operations then run as plain PyTorch."""
    return backend.c_library(t)


def stencil_gather_(out, inp, taps_t, stride: int, adjoint: bool = False, stats: bool = False):
    """out[..., :m] += stencil(inp) in place (forward, or the adjoint with adjoint=True). taps_t is S^T (2d, m).

    With stats=True, returns the float64 (N, C_out) sums and sums of squares over the voxels of the updated out,
    accumulated while it is written (what an instance norm after the convolution needs); else returns out.
    """
    d = out.dim() - 2
    lib = _use_c(out)
    if lib is None:
        _gather_torch_(out, inp, taps_t, stride, adjoint)
        if not stats:
            return out
        flat = out.reshape(out.shape[0], -1, out.shape[-1]).double()  # (N, V, C)
        return flat.sum(1), flat.square().sum(1)
    axis, sign = _taps(d, adjoint)
    mul, div = (stride, 1) if not adjoint else (1, stride)
    fn = getattr(lib, f"stencil_gather_{_cext.suffix(out.dtype)}")
    zeros = out.new_zeros(taps_t.shape[1])  # the source row of taps that fall outside the input
    threads = _cext.threads(out.numel())
    cs = out.shape[-1] if stats else 0
    partial = torch.zeros(threads, 2, out.shape[0], cs, dtype=torch.float64) if stats else None
    fn(
        out.data_ptr(),
        _grid(out),
        inp.data_ptr(),
        _grid(inp),
        taps_t.data_ptr(),
        zeros.data_ptr(),
        axis,
        sign,
        2 * d,
        taps_t.shape[1],
        mul,
        div,
        partial.data_ptr() if partial is not None else None,
        cs,
        threads,
    )
    if partial is None:
        return out
    total = partial.sum(0)
    return total[0], total[1]


# Up to this many channels in and out, the whole lean convolution is one pass of the C kernel lean_direct (the
# 1x1 computed per voxel from L1) instead of a BLAS GEMM plus the stencil pass: there the GEMM is bound by memory,
# and the direct kernel reads the input and writes the output once. Above it the GEMM's blocking wins.
DIRECT_MAX_CHANNELS = 64
_DIRECT_BLOCK = 16  # OB in csrc/lean_forward.c: output channels per block of accumulators


def _direct(lib, out, inp, wt, bias, taps_t, stride: int, adjoint: bool, stats: bool):
    """out = 1x1(inp) + stencil(inp) (+ bias) in one pass; wt (C_in', C_out') is the 1x1 as input-major rows.

    Forward: wt = W^T; adjoint (dx from dy): wt = W, the taps read at -e_k, the 1x1 from q / stride. Returns the
    float64 (N, C_out) sums and sums of squares of out with stats=True.
    """
    d = out.dim() - 2
    acc = _cext.acc_dtype(out.dtype)
    axis, sign = _taps(d, adjoint)
    mul, div = (stride, 1) if not adjoint else (1, stride)
    cin, cout = wt.shape
    threads = _cext.threads(out.numel())
    partial = torch.zeros(threads, 2, out.shape[0], cout, dtype=torch.float64) if stats else None
    partial_ptr = partial.data_ptr() if partial is not None else None
    if _tile_ok(lib, out, cout) and div == 1:
        _tile(lib, out, inp, wt, bias, taps_t, axis, sign, mul, partial_ptr, threads)
    else:
        wtp = _pad_cols(wt.to(acc), -(-cout // _DIRECT_BLOCK) * _DIRECT_BLOCK)  # padded to whole blocks
        taps = taps_t.to(acc).contiguous()
        bias = bias.to(acc).contiguous() if bias is not None else None
        zeros = out.new_zeros(max(cin, taps_t.shape[1]))  # the source of taps and 1x1 outside the input
        getattr(lib, f"lean_direct_{_cext.suffix(out.dtype)}")(
            out.data_ptr(), _grid(out), inp.data_ptr(), _grid(inp), wtp.data_ptr(),
            bias.data_ptr() if bias is not None else None, taps.data_ptr(), zeros.data_ptr(), axis, sign, 2 * d,
            cin, cout, taps.shape[1], mul, div, partial_ptr, threads,
        )
    if partial is not None:
        total = partial.sum(0)
        return total[0], total[1]
    return None


# The AVX-512 float32 kernels (lean_tile_f32, lean_wgrad_f32) where the library has them; tests turn this off to
# compare them with the portable kernels and BLAS.
SIMD_F32 = True
_TILE_MAX_CHANNELS = 64  # lean_tile_f32 holds up to 4 blocks of 16 outputs per voxel in registers
# lean_wgrad_f32 (dW, dS and dbias in one pass) against BLAS's dW plus the dS and dbias passes, one thread: about
# 0.35x their time at 16 channels, 0.7x at 32 (2D 512^2), 1.05x at 64 (3D 48^3), float32
_WGRAD_MAX_CHANNELS = 32


def _simd_f32(lib, t: torch.Tensor) -> bool:
    return SIMD_F32 and t.dtype == torch.float32 and bool(lib.lean_simd())


def _wgrad_ok(lib, t: torch.Tensor, weight: torch.Tensor) -> bool:
    return max(weight.shape) <= _WGRAD_MAX_CHANNELS and _simd_f32(lib, t)


def _tile_ok(lib, t: torch.Tensor, cout: int) -> bool:
    return cout <= _TILE_MAX_CHANNELS and _simd_f32(lib, t)


def _pad_cols(t: torch.Tensor, cols: int) -> torch.Tensor:
    """t (rows, k), zero-padded on the right to (rows, cols), contiguous, in t's dtype."""
    out = t.new_zeros(t.shape[0], cols)
    out[:, : t.shape[1]] = t
    return out


def _tile(lib, out, inp, wt, bias, taps_t, axis, sign, mul: int, partial_ptr, threads: int) -> None:
    """_direct's pass through lean_tile_f32 (float32, AVX-512, div = 1): W^T, taps and bias padded to 16-wide
    blocks; the norm statistics (if partial_ptr) summed as _direct's are."""
    cin, cout = wt.shape
    coutp = -(-cout // 16) * 16
    wt_p, taps_p = _pad_cols(wt, coutp), _pad_cols(taps_t, coutp)  # bound to names: alive during the call
    bias_p = _pad_cols(bias.reshape(1, -1), coutp) if bias is not None else None
    zeros = out.new_zeros(max(cin, taps_t.shape[1]) + 16)  # the source of taps outside the input
    lib.lean_tile_f32(
        out.data_ptr(), _grid(out), inp.data_ptr(), _grid(inp), wt_p.data_ptr(),
        bias_p.data_ptr() if bias_p is not None else None, taps_p.data_ptr(), zeros.data_ptr(),
        axis, sign, len(axis), cin, cout, taps_t.shape[1], mul, partial_ptr, int(_stream(out, inp)), threads,
    )


# A pass whose input and output together fill the last-level cache writes its output with non-temporal stores
# (lean_tile_f32's stream): the next pass could not find it in cache anyway, and the store skips reading each line
# before writing it. Measured (AMD EPYC, 32 MiB L3, 16 -> 16 channels at 512^2 and 64^3, in-process A/B of the
# same build): the forward in 0.85-0.95x the time with two threads, 0.9-1.0x with one; a 4x128^3 LeanUNet
# forward unchanged. Not for dx in the backward, where the same A/B was mixed (0.9-1.1x).
STREAM_BYTES = _cext.last_level_cache_bytes()


def _stream(out: torch.Tensor, inp: torch.Tensor) -> bool:
    big = (out.numel() * out.element_size() + inp.numel() * inp.element_size()) >= STREAM_BYTES
    return big and out.data_ptr() % 64 == 0 and out.shape[-1] % 16 == 0 and out.is_contiguous()


def _use_direct(t: torch.Tensor, weight: torch.Tensor):
    # not for bfloat16: oneDNN's AMX GEMM plus the (AVX512-BF16) gather pass is faster, 0.6-0.8x the time of this
    # kernel even with its 1x1 as vdpbf16ps (tried: 32 -> 32 channels at 128^3, 64 -> 64 at 64^3)
    lib = _use_c(t) if t.dtype != torch.bfloat16 else None
    return lib if lib is not None and max(weight.shape) <= DIRECT_MAX_CHANNELS else None


def stencil_grad(g, inp, stride: int):
    """dS^T (2d, m): sum over output voxels of g_o(p) * inp_o(s p + e_k)."""
    d = g.dim() - 2
    m = inp.shape[-1]
    lib = _use_c(g)
    if lib is None:
        xp = torch.nn.functional.pad(inp, (0, 0) + (1, 1) * d)
        dims = tuple(range(d + 1))
        return torch.stack(
            [
                (g[..., :m] * shifted(xp, k // 2, -1 if k % 2 == 0 else 1, stride, g.shape[1:-1])).sum(dims)
                for k in range(2 * d)
            ]
        )
    threads = _cext.threads(g.numel())
    partial = torch.zeros(threads, 2 * d, m, dtype=torch.float64)
    axis, sign = _taps(d, False)
    fn = getattr(lib, f"stencil_grad_{_cext.suffix(g.dtype)}")
    zeros = g.new_zeros(m)
    fn(
        partial.data_ptr(),
        g.data_ptr(),
        _grid(g),
        inp.data_ptr(),
        _grid(inp),
        zeros.data_ptr(),
        axis,
        sign,
        2 * d,
        m,
        stride,
        threads,
    )
    return partial.sum(0).to(g.dtype)


def _gather_torch_(out, inp, taps_t, stride, adjoint):
    """The same update in plain PyTorch, for dtypes and machines the C kernels do not cover."""
    d = out.dim() - 2
    m = taps_t.shape[1]
    if not adjoint:
        out[..., :m] += stencil_channels_last(inp[..., :m], taps_t, stride, out.shape[1:-1])
        return out
    if stride == 1:  # the adjoint reads at -e_k what the forward read at +e_k
        swap = [k ^ 1 for k in range(2 * d)]
        out[..., :m] += stencil_channels_last(inp[..., :m], taps_t[swap], 1, out.shape[1:-1])
        return out
    outp = torch.nn.functional.pad(out[..., :m], (0, 0) + (1, 1) * d)  # scatter dx(2p + e_k) += S_k dy(p)
    for k in range(2 * d):
        shifted(outp, k // 2, -1 if k % 2 == 0 else 1, 2, inp.shape[1:-1]).add_(inp[..., :m] * taps_t[k])
    out[..., :m] = outp[(slice(None),) + (slice(1, -1),) * d]
    return out


def _lerp_table(n_in: int, n_out: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output coordinate, the two source indices (int64, (n_out, 2)) and weights ((n_out, 2) in dtype) of
    linear interpolation from n_in to n_out points, align_corners=False: ATen's rule (source = (i + 0.5) * scale
    - 0.5, clamped at 0, with scale = n_in / n_out computed in the accumulator type)."""
    scale = torch.tensor(n_in / n_out, dtype=dtype)
    src = ((torch.arange(n_out, dtype=dtype) + 0.5) * scale - 0.5).clamp_min(0)
    i0 = src.long()  # floor: src >= 0
    lam = (src - i0).clamp(0, 1)
    idx = torch.stack([i0, i0 + (i0 < n_in - 1).long()], 1)
    return idx.contiguous(), torch.stack([1 - lam, lam], 1).contiguous()


def upsample_linear(lib, out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    """out (N, *size_out, C) = linear interpolation (align_corners=False) of inp (N, *size_in, C), both
    channels-last contiguous, 2D or 3D: F.interpolate(mode="(bi|tri)linear") in one pass of the C kernel."""
    acc = _cext.acc_dtype(inp.dtype)
    sin = [1] * (5 - inp.dim()) + list(inp.shape[1:-1])
    sout = [1] * (5 - out.dim()) + list(out.shape[1:-1])
    tables = [_lerp_table(a, b, acc) for a, b in zip(sin, sout, strict=True)]  # (D, H, W)
    getattr(lib, f"upsample_linear_{_cext.suffix(inp.dtype)}")(
        out.data_ptr(), _grid(out), inp.data_ptr(), _grid(inp), *[t[0].data_ptr() for t in tables],
        *[t[1].data_ptr() for t in tables], _cext.threads(out.numel()),
    )
    return out


def _wgrad_partials(dy, cin: int, cout: int) -> torch.Tensor:
    """The zeroed per-thread float64 partials that lean_wgrad_f32 / lean_bwd_f32 add dW, dS and dbias into:
    (threads, cout * cinp + 2d * coutp + coutp), channel counts rounded up to 16."""
    cinp, coutp = -(-cin // 16) * 16, -(-cout // 16) * 16
    size = cout * cinp + 2 * (dy.dim() - 2) * coutp + coutp
    return torch.zeros(_cext.threads(dy.numel()), size, dtype=torch.float64)


def _split_wgrad(partial, cin: int, cout: int, m: int, dtype):
    """(dW, dS (m, 2d), dbias) in dtype from the per-thread float64 partials of lean_wgrad_f32 / lean_bwd_f32."""
    cinp, coutp = -(-cin // 16) * 16, -(-cout // 16) * 16
    total = partial.sum(0)
    nt = (total.numel() - cout * cinp - coutp) // coutp
    dw = total[: cout * cinp].view(cout, cinp)[:, :cin]
    ds = total[cout * cinp : cout * cinp + nt * coutp].view(nt, coutp)[:, :m].t()
    db = total[cout * cinp + nt * coutp :][:cout]
    return dw.to(dtype), ds.to(dtype), db.to(dtype)


def _wgrad(lib, dy, xl, st, stride: int):
    """(dW (C_out, C_in), dS (m, 2d), dbias (C_out,)) in one pass of lean_wgrad_f32 over dy and xl."""
    d = dy.dim() - 2
    cin, cout, m = xl.shape[-1], dy.shape[-1], st.shape[1]
    partial = _wgrad_partials(dy, cin, cout)
    axis, sign = _taps(d, False)
    lib.lean_wgrad_f32(
        partial.data_ptr(), dy.data_ptr(), _grid(dy), xl.data_ptr(), _grid(xl), axis, sign, 2 * d, cin, cout, m,
        stride, partial.shape[0],
    )
    return _split_wgrad(partial, cin, cout, m, dy.dtype)


def _bwd(lib, dy, xl, weight, st):
    """(dx, dW, dS, dbias) of a stride-1 lean convolution in one pass of lean_bwd_f32 over dy and xl: dx as
    _direct's adjoint, the rest as _wgrad, with dy read once."""
    d = dy.dim() - 2
    cout, cin, m = weight.shape[0], weight.shape[1], st.shape[1]
    cinp = -(-cin // 16) * 16
    partial = _wgrad_partials(dy, cin, cout)
    dx = xl.new_empty(xl.shape)
    w_p, taps_p = _pad_cols(weight, cinp), _pad_cols(st, cinp)  # bound to names: alive during the call
    zeros = dy.new_zeros(max(cout, m) + 16)  # the source of dx's taps outside dy
    axis, sign = _taps(d, False)
    lib.lean_bwd_f32(
        partial.data_ptr(), dx.data_ptr(), _grid(dx), dy.data_ptr(), _grid(dy), xl.data_ptr(), _grid(xl),
        w_p.data_ptr(), taps_p.data_ptr(), zeros.data_ptr(), axis, sign, 2 * d, cin, cout, m, partial.shape[0],
    )
    return (dx, *_split_wgrad(partial, cin, cout, m, dy.dtype))


def _gemm(a: torch.Tensor, w: torch.Tensor, bias=None, out=None) -> torch.Tensor:
    """a (N, *sp, K) @ w.T as one BLAS call on the flattened voxels; returns (N, *sp, C) contiguous (in out, a
    contiguous tensor of that shape, when given)."""
    a2 = a.reshape(-1, a.shape[-1])
    o2 = out.view(-1, w.shape[0]) if out is not None else None
    y = torch.addmm(bias, a2, w.t(), out=o2) if bias is not None else torch.mm(a2, w.t(), out=o2)
    return y.view(*a.shape[:-1], w.shape[0])


def _subsample(t: torch.Tensor, stride: int) -> torch.Tensor:
    return t[(slice(None),) + (slice(None, None, stride),) * (t.dim() - 2)] if stride > 1 else t


def conv_forward(xl, weight, st, bias, stride: int, stats: bool = False, out=None):
    """The lean convolution of channels-last xl (N, *spatial, C_in); st is S^T (2d, m), contiguous.

    Returns y (N, *out, C_out) contiguous, and with stats=True also its float64 (N, C_out) sums and sums of squares.
    out: a contiguous tensor of y's shape and dtype to write y into (a buffer the caller reuses), or None.
    """
    shape = [xl.shape[0], *[(n - 1) // stride + 1 for n in xl.shape[1:-1]], weight.shape[0]]
    if out is not None and (list(out.shape) != shape or out.dtype != xl.dtype or not out.is_contiguous()):
        out = None
    lib = _use_direct(xl, weight)
    if lib is not None:
        y = out if out is not None else xl.new_empty(shape)  # (N, *out, C_out)
        sums = _direct(lib, y, xl, weight.t(), bias, st, stride, adjoint=False, stats=stats)
        return (y, *sums) if stats else y
    y = _gemm(_subsample(xl, stride), weight, bias, out)  # (N, *out, C_out)
    sums = stencil_gather_(y, xl, st, stride, stats=stats)
    return (y, *sums) if stats else y


def conv_backward(dy, xl, weight, st, stride: int, needs):
    """Gradients (dx, dW, dS, dbias) of the lean convolution for dy (N, *out, C_out) contiguous; None where
    needs[i] is false. dx is channels-last (N, *spatial, C_in); dS is (m, 2d)."""
    dx = dw = ds = db = None
    clib = _use_c(dy)
    if clib is not None and stride == 1 and all(needs[:3]) and _wgrad_ok(clib, dy, weight):
        dx, dw, ds, db = _bwd(clib, dy, xl, weight, st)
        return dx, dw, ds, db if needs[3] else None
    lib = _use_direct(dy, weight)
    if needs[0] and lib is not None:
        dx = xl.new_empty(xl.shape)
        _direct(lib, dx, dy, weight, None, st, stride, adjoint=True, stats=False)
    elif needs[0]:
        if stride == 1:
            dx = _gemm(dy, weight.t())
        else:
            dx = xl.new_zeros(xl.shape)
            _subsample(dx, stride).copy_(_gemm(dy, weight.t()))
        stencil_gather_(dx, dy, st, stride, adjoint=True)
    if any(needs[1:]) and clib is not None and _wgrad_ok(clib, dy, weight):
        dw, ds, db = _wgrad(clib, dy, xl, st, stride)
        return dx, dw if needs[1] else None, ds if needs[2] else None, db if needs[3] else None
    if needs[1]:
        xs = _subsample(xl, stride)
        dw = dy.reshape(-1, dy.shape[-1]).t() @ xs.reshape(-1, xs.shape[-1])
    if needs[2]:
        ds = stencil_grad(dy, xl[..., : st.shape[1]], stride).t()
    if needs[3]:
        db = dy.reshape(-1, dy.shape[-1]).sum(0)
    return dx, dw, ds, db


class _LeanConvCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stencil, bias, stride):
        xl = x.movedim(1, -1).contiguous()  # (N, *spatial, C_in): free when x is channels-last
        st = stencil.t().contiguous()  # (2d, m): one contiguous row of taps per offset
        y = conv_forward(xl, weight, st, bias, stride)  # (N, *out, C_out)
        ctx.save_for_backward(xl, weight, st)
        ctx.stride = stride
        ctx.has_bias = bias is not None
        return y.movedim(-1, 1)  # (N, C_out, *out), channels-last in memory

    @staticmethod
    def backward(ctx, grad_out):
        xl, weight, st = ctx.saved_tensors
        dy = grad_out.movedim(1, -1).contiguous()  # (N, *out, C_out)
        needs = list(ctx.needs_input_grad[:3]) + [ctx.has_bias and ctx.needs_input_grad[3]]
        dx, dw, ds, db = conv_backward(dy, xl, weight, st, ctx.stride, needs)
        return dx.movedim(-1, 1) if dx is not None else None, dw, ds, db, None


def lean_conv_cpu(
    x: torch.Tensor, weight: torch.Tensor, stencil: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """Fast CPU lean convolution (arguments as lean_conv_reference); output is channels-last in memory."""
    return _LeanConvCPU.apply(x, weight, stencil, bias, stride)
