"""Fused Triton kernels for the lean convolution, forward and backward, written once for 3D.

    y_o(p) = act( sum_c W[o, c] x_c(s p) + sum_k S[o, k] x_o(s p + e_k) + bias[o] + residual_o(p) )

(the stencil sum only for o < m = min(C_in, C_out); see kernels3d.reference for the operator itself).

Layout: every kernel sees channels-last (N, D, H, W, C) tensors, so a voxel's channels are contiguous and the
1x1 is a tl.dot of a (voxels x C_in) tile with a (C_in x C_out) tile. A 2D input is the depth-1 case: it is
viewed as (N, 1, H, W, C) and DIMS = 2 drops the two depth taps at compile time, so the stencil's column k
is the tap on axis 3 - DIMS + k // 2 of (D, H, W) in both cases.

Channel tiles are at least 16 wide (tl.dot's minimum); channels past C are masked to zero, which is how
C = 4 (the MRI modalities) or odd C work. Voxel coordinates are int32 (the launchers check that a volume has
fewer than 2**31 voxels); element offsets, voxel * C + c, are int64, since 2 x 32 x 256^3 > 2**31 elements.
Accumulation is float32 whatever the storage dtype; float32 tl.dot runs in IEEE precision, not TF32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels3d import interpret
from kernels3d.reference import check_args, lean_conv_reference, out_size

# Triton decides at @triton.jit time whether kernels run in the interpreter; mirror that decision here.
INTERPRET = interpret()
# The epilogue activations the kernels fuse, as their compile-time ACT codes. These are kernel constants, not
# the model-level activation table (that is leanseg.nn.factories.ACTS, which builds nn.Module activations).
EPILOGUE_ACT_CODES = {None: 0, "relu": 1, "leaky_relu": 2}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------------------------
# Plain-PyTorch reference of the fused operator (the convolution plus its epilogues)
# ----------------------------------------------------------------------------------------------------------------


def reference(x, weight, stencil, bias=None, stride=1, residual=None, activation=None, negative_slope=0.01):
    """What lean_conv computes, in plain PyTorch (any dtype, float64 included)."""
    y = lean_conv_reference(x, weight, stencil, bias, stride)
    if residual is not None:
        y = y + residual
    if activation == "relu":
        y = F.relu(y)
    elif activation == "leaky_relu":
        y = F.leaky_relu(y, negative_slope)
    return y


# ----------------------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------------------


@triton.jit
def _split(q, D, H, W):
    """(n, d, h, w) of the voxel index q on an (N, D, H, W) grid."""
    w = q % W
    t = q // W
    h = t % H
    t = t // H
    return t // D, t % D, h, w


@triton.jit
def _voxel(n, d, h, w, D, H, W, STRIDE: tl.constexpr):
    """int64 index and validity of position (d, h, w) on the grid (D, H, W) taken every STRIDE voxels.

    Valid means inside the grid and, for STRIDE 2, on an even position in every axis (the voxels the
    strided forward read, which are the ones its adjoint writes).
    """
    if STRIDE == 1:
        ok = (d >= 0) & (d < D) & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    else:
        ok = (d >= 0) & (h >= 0) & (w >= 0) & (d % STRIDE == 0) & (h % STRIDE == 0) & (w % STRIDE == 0)
        d = d // STRIDE
        h = h // STRIDE
        w = w // STRIDE
        ok = ok & (d < D) & (h < H) & (w < W)
    return ((n * D + d) * H + h).to(tl.int64) * W + w, ok


@triton.jit
def _shift(d, h, w, AXIS: tl.constexpr, SIGN: tl.constexpr):
    """(d, h, w) + SIGN * e_AXIS."""
    if AXIS == 0:
        d = d + SIGN
    elif AXIS == 1:
        h = h + SIGN
    else:
        w = w + SIGN
    return d, h, w


@triton.jit
def _epilogue(acc, o, o_ok, y_off, mask, b_ptr, r_ptr, slope,
              HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr):
    """acc + bias + residual, then the activation (0 none, 1 ReLU, 2 LeakyReLU), in float32."""
    if HAS_BIAS:
        acc += tl.load(b_ptr + o, mask=o_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_RES:
        acc += tl.load(r_ptr + y_off, mask=mask, other=0.0).to(tl.float32)
    if ACT == 1:
        acc = tl.maximum(acc, 0.0)
    elif ACT == 2:
        acc = tl.where(acc > 0, acc, acc * slope)
    return acc


@triton.jit
def _forward_kernel(
    x_ptr,  # input (N, D, H, W, C_IN), channels-last contiguous; D = 1 for 2D
    w_ptr,  # 1x1 weight (C_OUT, C_IN), row-major
    s_ptr,  # stencil (M, 2 * DIMS), row-major, columns in the order of the taps e_k
    b_ptr,  # bias (C_OUT,); read only when HAS_BIAS
    r_ptr,  # residual (N, DO, HO, WO, C_OUT) added before the activation; read only when HAS_RES
    y_ptr,  # output (N, DO, HO, WO, C_OUT), written once
    D, H, W, DO, HO, WO,  # input and output grid sizes
    P,  # number of output voxels, N * DO * HO * WO
    C_IN, C_OUT, M,  # channels in, out, and with a stencil (min of the two)
    slope,  # LeakyReLU negative slope
    STRIDE: tl.constexpr, DIMS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One (BLOCK_P voxels x BLOCK_O output channels) tile of y: tl.dot over C_IN tiles, then the 2*DIMS taps."""
    pid = tl.program_id(0)
    n_o = tl.cdiv(C_OUT, BLOCK_O)
    pid_p = pid // n_o  # programs sharing a voxel tile run next to each other, so its input stays in L2
    pid_o = pid % n_o
    q = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    q_ok = q < P
    n, d, h, w = _split(q, DO, HO, WO)
    d, h, w = d * STRIDE, h * STRIDE, w * STRIDE  # input position of each output voxel
    v, _ = _voxel(n, d, h, w, D, H, W, 1)
    o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = o < C_OUT

    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    for k0 in range(0, C_IN, BLOCK_K):
        c = k0 + tl.arange(0, BLOCK_K)
        c_ok = c < C_IN
        xt = tl.load(x_ptr + v[:, None] * C_IN + c[None, :], mask=q_ok[:, None] & c_ok[None, :], other=0.0)
        wt = tl.load(w_ptr + o[None, :] * C_IN + c[:, None], mask=c_ok[:, None] & o_ok[None, :], other=0.0)
        acc = tl.dot(xt, wt, acc, input_precision="ieee")

    s_ok = o < M
    for k in tl.static_range(2 * DIMS):
        dn, hn, wn = _shift(d, h, w, 3 - DIMS + k // 2, 2 * (k % 2) - 1)
        vn, ok = _voxel(n, dn, hn, wn, D, H, W, 1)
        xn = tl.load(x_ptr + vn[:, None] * C_IN + o[None, :], mask=(q_ok & ok)[:, None] & s_ok[None, :], other=0.0)
        sk = tl.load(s_ptr + o * (2 * DIMS) + k, mask=s_ok, other=0.0)
        acc += xn.to(tl.float32) * sk.to(tl.float32)[None, :]

    y_off = q.to(tl.int64)[:, None] * C_OUT + o[None, :]
    mask = q_ok[:, None] & o_ok[None, :]
    acc = _epilogue(acc, o, o_ok, y_off, mask, b_ptr, r_ptr, slope, HAS_BIAS, HAS_RES, ACT)
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _input_grad_kernel(
    g_ptr,  # output gradient dy (N, DO, HO, WO, C_OUT), channels-last contiguous
    w_ptr,  # 1x1 weight (C_OUT, C_IN), row-major
    s_ptr,  # stencil (M, 2 * DIMS), row-major
    dx_ptr,  # input gradient (N, D, H, W, C_IN), written once
    D, H, W, DO, HO, WO,  # input and output grid sizes
    P,  # number of input voxels, N * D * H * W
    C_IN, C_OUT, M,
    STRIDE: tl.constexpr, DIMS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One (BLOCK_P input voxels x BLOCK_O input channels) tile of dx = W^T dy + adjoint stencil of dy.

    Written as a gather, so no atomics: input voxel q receives dy(p) through the 1x1 where s p = q, and through
    tap k where s p + e_k = q. For stride 1 that is dy(q - e_k); for stride 2 only voxels whose other
    coordinates are even receive anything, and the 1x1 only the all-even ones.
    """
    pid = tl.program_id(0)
    n_c = tl.cdiv(C_IN, BLOCK_O)
    pid_p = pid // n_c
    pid_c = pid % n_c
    q = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    q_ok = q < P
    n, d, h, w = _split(q, D, H, W)
    c = pid_c * BLOCK_O + tl.arange(0, BLOCK_O)
    c_ok = c < C_IN

    u, on = _voxel(n, d, h, w, DO, HO, WO, STRIDE)  # the output voxel this one feeds through the 1x1
    on = on & q_ok
    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    for k0 in range(0, C_OUT, BLOCK_K):
        o = k0 + tl.arange(0, BLOCK_K)
        o_ok = o < C_OUT
        gt = tl.load(g_ptr + u[:, None] * C_OUT + o[None, :], mask=on[:, None] & o_ok[None, :], other=0.0)
        wt = tl.load(w_ptr + o[:, None] * C_IN + c[None, :], mask=o_ok[:, None] & c_ok[None, :], other=0.0)
        acc = tl.dot(gt, wt, acc, input_precision="ieee")

    s_ok = c < M
    for k in tl.static_range(2 * DIMS):
        ds, hs, ws = _shift(d, h, w, 3 - DIMS + k // 2, 1 - 2 * (k % 2))  # q - e_k
        us, ok = _voxel(n, ds, hs, ws, DO, HO, WO, STRIDE)
        gs = tl.load(g_ptr + us[:, None] * C_OUT + c[None, :], mask=(q_ok & ok)[:, None] & s_ok[None, :], other=0.0)
        sk = tl.load(s_ptr + c * (2 * DIMS) + k, mask=s_ok, other=0.0)
        acc += gs.to(tl.float32) * sk.to(tl.float32)[None, :]

    dx_off = q.to(tl.int64)[:, None] * C_IN + c[None, :]
    tl.store(dx_ptr + dx_off, acc.to(dx_ptr.dtype.element_ty), mask=q_ok[:, None] & c_ok[None, :])


@triton.jit
def _param_grad_kernel(
    g_ptr,  # output gradient dy (N, DO, HO, WO, C_OUT), channels-last contiguous
    x_ptr,  # input (N, D, H, W, C_IN), channels-last contiguous
    dw_ptr,  # float32 (SPLITS, C_OUT, C_IN): this split's sum over its voxels of dy x^T
    ds_ptr,  # float32 (SPLITS, 2 * DIMS, M): this split's dS^T; written by the programs with channel block 0
    db_ptr,  # float32 (SPLITS, C_OUT): this split's sum of dy; written by the programs with channel block 0
    D, H, W, DO, HO, WO,  # input and output grid sizes
    P,  # number of output voxels, N * DO * HO * WO
    CHUNK,  # output voxels per split
    C_IN, C_OUT, M,
    STRIDE: tl.constexpr, DIMS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dW, dS and dbias of one chunk of output voxels and one (BLOCK_O x BLOCK_K) tile of W, in one read of dy.

    Grid (SPLITS, C_OUT tiles, C_IN tiles). The launcher sums the splits, so the reduction is deterministic.
    """
    pid_s = tl.program_id(0)
    o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    c = tl.program_id(2) * BLOCK_K + tl.arange(0, BLOCK_K)
    stencil_too = tl.program_id(2) == 0
    o_ok = o < C_OUT
    c_ok = c < C_IN
    s_ok = o < M
    taps = tl.arange(0, 8)  # columns of the dS tile, 2 * DIMS of 8 used

    dw = tl.zeros((BLOCK_O, BLOCK_K), dtype=tl.float32)
    ds = tl.zeros((BLOCK_O, 8), dtype=tl.float32)
    db = tl.zeros((BLOCK_O,), dtype=tl.float32)
    start = pid_s * CHUNK
    stop = tl.minimum(start + CHUNK, P)
    for p0 in range(start, stop, BLOCK_P):
        q = p0 + tl.arange(0, BLOCK_P)
        q_ok = q < stop
        n, d, h, w = _split(q, DO, HO, WO)
        d, h, w = d * STRIDE, h * STRIDE, w * STRIDE
        v, _ = _voxel(n, d, h, w, D, H, W, 1)
        g = tl.load(g_ptr + q.to(tl.int64)[:, None] * C_OUT + o[None, :], mask=q_ok[:, None] & o_ok[None, :],
                    other=0.0)
        xt = tl.load(x_ptr + v[:, None] * C_IN + c[None, :], mask=q_ok[:, None] & c_ok[None, :], other=0.0)
        dw = tl.dot(tl.trans(g), xt, dw, input_precision="ieee")
        if stencil_too:
            gf = g.to(tl.float32)
            db += tl.sum(gf, axis=0)
            for k in tl.static_range(2 * DIMS):
                dn, hn, wn = _shift(d, h, w, 3 - DIMS + k // 2, 2 * (k % 2) - 1)
                vn, ok = _voxel(n, dn, hn, wn, D, H, W, 1)
                xn = tl.load(x_ptr + vn[:, None] * C_IN + o[None, :], mask=(q_ok & ok)[:, None] & s_ok[None, :],
                             other=0.0)
                part = tl.sum(gf * xn.to(tl.float32), axis=0)
                ds += tl.where(taps[None, :] == k, part[:, None], 0.0)

    split = pid_s.to(tl.int64)
    tl.store(dw_ptr + split * C_OUT * C_IN + o[:, None] * C_IN + c[None, :], dw, mask=o_ok[:, None] & c_ok[None, :])
    if stencil_too:
        tl.store(ds_ptr + split * (2 * DIMS) * M + taps[None, :] * M + o[:, None], ds,
                 mask=s_ok[:, None] & (taps[None, :] < 2 * DIMS))
        tl.store(db_ptr + split * C_OUT + o, db, mask=o_ok)


# ----------------------------------------------------------------------------------------------------------------
# Launch settings
# ----------------------------------------------------------------------------------------------------------------


# (BLOCK_P, BLOCK_O, BLOCK_K, num_warps): a short list, because each config costs a compile of seconds to a
# minute. BLOCK_O up to 128 lets one program cover all of a layer's C_out, so x is read from DRAM once; the
# tl.dot depth BLOCK_K stays at 64 or less since C_in is looped over; num_stages 2, as that loop is short.
TILES = [(64, 16, 16, 4), (128, 32, 32, 4), (256, 32, 32, 8), (128, 64, 32, 4), (64, 64, 64, 4),
         (256, 64, 32, 8), (128, 128, 32, 8), (64, 128, 64, 4)]


def tile_configs():
    """Tiles to autotune over; one fixed tile under the interpreter, where benchmarking would only cost time."""
    if INTERPRET:
        return [triton.Config({"BLOCK_P": 64, "BLOCK_O": 16, "BLOCK_K": 16}, num_warps=4)]
    return [triton.Config({"BLOCK_P": bp, "BLOCK_O": bo, "BLOCK_K": bk}, num_warps=nw, num_stages=2)
            for bp, bo, bk, nw in TILES]


def _channel_prune(tile_channels: str, dot_channels: str):
    """Autotune pruner: drop tiles whose BLOCK_O (over tile_channels) or BLOCK_K (the tl.dot's depth, over
    dot_channels) is wider than those channels beyond tl.dot's minimum of 16; they only add masked work."""

    def prune(configs, named_args, **kwargs):
        wide = max(16, triton.next_power_of_2(named_args[tile_channels]))
        deep = max(16, triton.next_power_of_2(named_args[dot_channels]))
        kept = [c for c in configs if c.kwargs["BLOCK_O"] <= wide and c.kwargs["BLOCK_K"] <= deep]
        return kept or configs[:1]

    return prune


def _autotuned(kernel, tile_channels: str, dot_channels: str):
    return triton.autotune(tile_configs(), key=["P", "C_IN", "C_OUT", "STRIDE", "DIMS"],
                           prune_configs_by={"early_config_prune": _channel_prune(tile_channels, dot_channels)})(kernel)


forward_kernel = _autotuned(_forward_kernel, "C_OUT", "C_IN")
input_grad_kernel = _autotuned(_input_grad_kernel, "C_IN", "C_OUT")
param_grad_kernel = _autotuned(_param_grad_kernel, "C_OUT", "C_IN")


def _splits(p: int, device) -> int:
    """How many voxel chunks the parameter gradients are split into: enough programs to fill the GPU."""
    if INTERPRET:
        return max(1, min(4, triton.cdiv(p, 256)))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(4 * sms, triton.cdiv(p, 1024)))


# ----------------------------------------------------------------------------------------------------------------
# Launchers: check shapes, allocate, launch
# ----------------------------------------------------------------------------------------------------------------


def _check_grid(xl: torch.Tensor):
    if xl.dim() != 5 or not xl.is_contiguous():
        raise ValueError("kernels take contiguous channels-last (N, D, H, W, C) tensors")
    if xl.shape[:4].numel() >= 2**31:
        raise ValueError(f"volume of {xl.shape[:4].numel()} voxels: kernels index voxels with int32 (< 2**31)")


def forward(xl, weight, stencil, bias, stride, dims, residual=None, act=0, slope=0.01):
    """y (N, DO, HO, WO, C_out) from channels-last xl (N, D, H, W, C_in); residual is laid out like y."""
    _check_grid(xl)
    n, d, h, w, c_in = xl.shape
    c_out = weight.shape[0]
    do, ho, wo = (out_size(s, stride) for s in (d, h, w))
    y = xl.new_empty((n, do, ho, wo, c_out))
    if residual is not None and residual.shape != y.shape:
        raise ValueError(f"residual must have shape {tuple(y.shape)} (channels-last), got {tuple(residual.shape)}")
    p = n * do * ho * wo
    grid = lambda meta: (triton.cdiv(p, meta["BLOCK_P"]) * triton.cdiv(c_out, meta["BLOCK_O"]),)  # noqa: E731
    forward_kernel[grid](xl, weight, stencil, bias if bias is not None else y, residual if residual is not None else y,
                         y, d, h, w, do, ho, wo, p, c_in, c_out, stencil.shape[0], slope,
                         STRIDE=stride, DIMS=dims, HAS_BIAS=bias is not None, HAS_RES=residual is not None, ACT=act)
    return y


def input_grad(g, weight, stencil, in_shape, stride, dims):
    """dx (N, D, H, W, C_in) from channels-last dy (N, DO, HO, WO, C_out)."""
    _check_grid(g)
    n, d, h, w, c_in = in_shape
    _, do, ho, wo, c_out = g.shape
    dx = g.new_empty(in_shape)
    p = n * d * h * w
    grid = lambda meta: (triton.cdiv(p, meta["BLOCK_P"]) * triton.cdiv(c_in, meta["BLOCK_O"]),)  # noqa: E731
    input_grad_kernel[grid](g, weight, stencil, dx, d, h, w, do, ho, wo, p, c_in, c_out, stencil.shape[0],
                            STRIDE=stride, DIMS=dims)
    return dx


def param_grads(g, xl, m, stride, dims):
    """(dW (C_out, C_in), dS (m, 2 dims), dbias (C_out,)) in float32, from dy and x, both channels-last."""
    _check_grid(g)
    _check_grid(xl)
    n, d, h, w, c_in = xl.shape
    _, do, ho, wo, c_out = g.shape
    p = n * do * ho * wo
    splits = _splits(p, g.device)
    chunk = triton.cdiv(p, splits)
    dw = g.new_empty((splits, c_out, c_in), dtype=torch.float32)
    ds = g.new_empty((splits, 2 * dims, m), dtype=torch.float32)
    db = g.new_empty((splits, c_out), dtype=torch.float32)
    grid = lambda meta: (splits, triton.cdiv(c_out, meta["BLOCK_O"]), triton.cdiv(c_in, meta["BLOCK_K"]))  # noqa: E731
    param_grad_kernel[grid](g, xl, dw, ds, db, d, h, w, do, ho, wo, p, chunk, c_in, c_out, m,
                            STRIDE=stride, DIMS=dims)
    return dw.sum(0), ds.sum(0).t(), db.sum(0)


# ----------------------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------------------


def _to_kernel_layout(t: torch.Tensor, dims: int) -> torch.Tensor:
    """(N, C, [D,] H, W) -> contiguous (N, D, H, W, C); free for a channels-last tensor."""
    t = t.movedim(1, -1)
    if dims == 2:
        t = t.unsqueeze(1)
    return t.contiguous()


def _from_kernel_layout(t: torch.Tensor, dims: int) -> torch.Tensor:
    """(N, D, H, W, C) -> (N, C, [D,] H, W) view, channels-last in memory."""
    if dims == 2:
        t = t.squeeze(1)
    return t.movedim(-1, 1)


class LeanConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stencil, bias, residual, stride, act, slope):
        dims = x.dim() - 2
        xl = _to_kernel_layout(x, dims)
        weight, stencil = weight.contiguous(), stencil.contiguous()
        res = _to_kernel_layout(residual, dims) if residual is not None else None
        y = forward(xl, weight, stencil, bias, stride, dims, res, act, slope)
        ctx.save_for_backward(xl, weight, stencil, y if act else None)
        ctx.conf = (stride, dims, act, slope, bias is not None, residual is not None)
        return _from_kernel_layout(y, dims)

    @staticmethod
    def backward(ctx, grad_out):
        xl, weight, stencil, y = ctx.saved_tensors
        stride, dims, act, slope, has_bias, has_res = ctx.conf
        g = _to_kernel_layout(grad_out, dims)
        if act:  # y > 0 exactly where the pre-activation is, for ReLU and for a positive LeakyReLU slope
            g = torch.where(y > 0, g, g * slope if act == 2 else torch.zeros_like(g))
        dx = dw = ds = db = dr = None
        if ctx.needs_input_grad[0]:
            dx = _from_kernel_layout(input_grad(g, weight, stencil, xl.shape, stride, dims), dims)
        if any(ctx.needs_input_grad[1:4]):
            dw, ds, db = param_grads(g, xl, stencil.shape[0], stride, dims)
            dw, ds = dw.to(weight.dtype), ds.to(stencil.dtype)
            db = db.to(weight.dtype) if has_bias else None
        if has_res and ctx.needs_input_grad[4]:
            dr = _from_kernel_layout(g, dims)
        return dx, dw, ds, db, dr, None, None, None


def launch(
    x: torch.Tensor, weight: torch.Tensor, stencil: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
    residual: torch.Tensor | None = None, activation: str | None = None, negative_slope: float = 0.01,
) -> torch.Tensor:
    """lean_conv without its argument checks, for callers that ran them (leanseg.nn.functional.lean_conv).

    Picks the path by dtype (the kernels for float32/float16/bfloat16, the PyTorch reference otherwise), casts
    the parameters to x's dtype and applies the autograd Function.
    """
    if x.dtype not in DTYPES:
        return reference(x, weight, stencil, bias, stride, residual, activation, negative_slope)
    cast = [t.to(x.dtype) if t is not None else None for t in (weight, stencil, bias, residual)]
    return LeanConvFunction.apply(x, *cast, stride, EPILOGUE_ACT_CODES[activation], float(negative_slope))


def lean_conv(
    x: torch.Tensor, weight: torch.Tensor, stencil: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
    residual: torch.Tensor | None = None, activation: str | None = None, negative_slope: float = 0.01,
) -> torch.Tensor:
    """Fused lean convolution with optional epilogues: act(lean_conv(x) + bias + residual).

    x is (N, C_in, [D,] H, W), channels-last or contiguous; weight (C_out, C_in); stencil (m, 4 or 6);
    residual has y's shape; activation is None, "relu" or "leaky_relu" (negative_slope >= 0). Returns
    (N, C_out, [D,] H', W') in channels-last memory. Parameters are cast to x's dtype. Dtypes other than
    float32/float16/bfloat16 run the PyTorch reference. Checks its arguments, then calls ``launch``.
    """
    check_args(x, weight, stencil, bias, stride)
    if activation not in EPILOGUE_ACT_CODES:
        raise ValueError(f"activation must be one of {list(EPILOGUE_ACT_CODES)}, got {activation!r}")
    if activation == "leaky_relu" and negative_slope < 0:
        raise ValueError(f"negative_slope must be >= 0 for the fused backward, got {negative_slope}")
    if x.dtype in DTYPES and not (x.is_cuda or INTERPRET):
        raise ValueError(f"kernels3d.lean_conv needs CUDA tensors (or TRITON_INTERPRET=1), got {x.device} tensors")
    return launch(x, weight, stencil, bias, stride, residual, activation, negative_slope)
