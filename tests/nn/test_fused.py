"""The fused CPU blocks (leanseg.nn.fused) against the unfused module composition, float64, values and gradients.

The unfused composition is the independent reference here: LeanConv, InstanceNorm and the activation each
already equal their PyTorch references (test_lean_conv.py, test_norm.py), so the fused kernels must give the
same numbers up to float64 rounding.
"""

import pytest
import torch

from leanseg.models import create
from leanseg.nn import ConvNormAct, UpBlock, _cpu, fused

SIZES = {2: (9, 7), 3: (7, 9, 5)}  # odd, unequal sizes


def _layout(x, channels_last):
    if not channels_last:
        return x
    return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)


def _randomise(module):
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_()


def _both(fn, monkeypatch):
    """fn() with the fused paths, then without them."""
    out = fn()
    monkeypatch.setattr(fused, "ENABLED", False)
    ref = fn()
    monkeypatch.setattr(fused, "ENABLED", True)
    return out, ref


@pytest.fixture(params=["direct", "gemm"])
def conv_path(request, monkeypatch):
    """Both CPU lean-conv paths: the one-pass direct kernel (small C) and BLAS GEMM + stencil pass."""
    if request.param == "gemm":
        monkeypatch.setattr(_cpu, "DIRECT_MAX_CHANNELS", 0)
    return request.param


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cin,cout", [(5, 5), (7, 3), (3, 6)])  # square, C_in > C_out, C_in < C_out
@pytest.mark.parametrize("act", ["leakyrelu", "relu", "none"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_conv_norm_act_float64(conv_path, monkeypatch, d, stride, cin, cout, act, channels_last):
    block = ConvNormAct(d, cin, cout, stride=stride, act=act).double()
    _randomise(block)
    x0 = _layout(torch.randn((2, cin, *SIZES[d]), dtype=torch.float64) * 2 + 1, channels_last)
    g = torch.randn((2, cout, *[(n - 1) // stride + 1 for n in SIZES[d]]), dtype=torch.float64)
    params = [p for _, p in block.named_parameters()]

    def run():
        x = x0.clone().requires_grad_(True)
        y = block(x)
        with torch.no_grad():
            y_eval = block(x0.clone())
        return (y.detach(), y_eval, *torch.autograd.grad(y, [x, *params], g))

    out, ref = _both(run, monkeypatch)
    names = ["y", "y (no_grad)", "dx"] + [n for n, _ in block.named_parameters()]
    for name, a, b in zip(names, out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


def test_dense_first_conv_inference_float64(monkeypatch):
    block = ConvNormAct(3, 4, 6, conv="dense").double().eval()
    _randomise(block)
    x = _layout(torch.randn(1, 4, 7, 9, 5, dtype=torch.float64), True)
    with torch.no_grad():
        out, ref = _both(lambda: block(x), monkeypatch)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("channels_last", [True, False])
def test_up_block_inference_float64(conv_path, monkeypatch, d, channels_last):
    """The decoder level without the concatenation: the 1x1 split into skip and up columns."""
    block = UpBlock(d, 8, 5, 5).double().eval()
    _randomise(block)
    skip = _layout(torch.randn((2, 5, *SIZES[d]), dtype=torch.float64), channels_last)
    x = _layout(torch.randn((2, 8, *[(n + 1) // 2 for n in SIZES[d]]), dtype=torch.float64), channels_last)
    with torch.no_grad():
        out, ref = _both(lambda: block(x, skip), monkeypatch)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels_last", [True, False])
def test_dense_first_conv_training_float64(monkeypatch, d, stride, channels_last):
    """The dense block of few input channels, recomputed in backward: output and every gradient."""
    block = ConvNormAct(d, 3, 6, stride=stride, conv="dense").double()
    _randomise(block)
    x0 = _layout(torch.randn((2, 3, *SIZES[d]), dtype=torch.float64), channels_last)
    g = torch.randn((2, 6, *[(n - 1) // stride + 1 for n in SIZES[d]]), dtype=torch.float64)
    params = list(block.parameters())

    def run():
        x = x0.clone().requires_grad_(True)
        y = block(x)
        return (y.detach(), *torch.autograd.grad(y, [x, *params], g))

    out, ref = _both(run, monkeypatch)
    assert fused._recomputable_dense(block.conv)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("channels_last", [True, False])
def test_up_block_training_float64(conv_path, monkeypatch, d, channels_last):
    """The decoder level in training, which keeps the coarse up output instead of the concatenation: output and
    the gradients of x, the skip and every parameter."""
    block = UpBlock(d, 8, 6, 5).double()  # the fuse conv's stencil (min(12, 5) channels) reads only the skip
    _randomise(block)
    skip0 = _layout(torch.randn((2, 6, *SIZES[d]), dtype=torch.float64), channels_last)
    x0 = _layout(torch.randn((2, 8, *[(n + 1) // 2 for n in SIZES[d]]), dtype=torch.float64), channels_last)
    g = torch.randn((2, 5, *SIZES[d]), dtype=torch.float64)
    params = list(block.parameters())
    assert fused.up_merge(block, x0, skip0) is not None  # the fused training path, not the fallback

    def run():
        x, skip = x0.clone().requires_grad_(True), skip0.clone().requires_grad_(True)
        y = block(x, skip)
        return (y.detach(), *torch.autograd.grad(y, [x, skip, *params], g))

    out, ref = _both(run, monkeypatch)
    names = ["y", "dx", "dskip"] + [n for n, _ in block.named_parameters()]
    for name, a, b in zip(names, out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("d,shape", [(3, (2, 2, 19, 13, 11)), (2, (2, 3, 21, 17))])  # odd sizes
def test_lean_unet_float64(conv_path, monkeypatch, d, shape):
    """A whole LeanUNet: inference and every parameter's gradient equal the unfused model's."""
    model = create("lean_unet", spatial_dims=d, in_channels=shape[1], out_channels=3, features=(4, 6, 8)).double()
    _randomise(model)
    x = torch.randn(shape, dtype=torch.float64)
    params = list(model.parameters())

    def run():
        model.eval()
        with torch.inference_mode():
            y_eval = model(x)
        model.train()
        y = model(x)
        return (y_eval, y.detach(), *torch.autograd.grad(y.square().sum(), params))

    out, ref = _both(run, monkeypatch)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("conv", ["lean", "dense"])
def test_float32_close_to_float64(monkeypatch, conv):
    """float32 through the fused kernels (coefficients converted to the kernels' types) stays within float32
    rounding of the unfused float64 block: catches a coefficient passed wrongly, which float64 alone would not."""
    block = ConvNormAct(3, 4 if conv == "dense" else 24, 24, conv=conv)
    _randomise(block)
    x = _layout(torch.randn(2, block.conv.in_channels, 11, 9, 13), True)
    block64 = ConvNormAct(3, block.conv.in_channels, 24, conv=conv).double()
    block64.load_state_dict({k: v.double() for k, v in block.state_dict().items()})
    monkeypatch.setattr(fused, "ENABLED", True)
    with torch.no_grad():
        y_eval = block(x)
    xg = x.clone().requires_grad_(True)
    y = block(xg)
    (gx,) = torch.autograd.grad(y, xg, torch.ones_like(y))
    monkeypatch.setattr(fused, "ENABLED", False)
    x64 = x.double().requires_grad_(True)
    y64 = block64(x64)
    (gx64,) = torch.autograd.grad(y64, x64, torch.ones_like(y64))
    torch.testing.assert_close(y_eval.double(), y64.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y.detach().double(), y64.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gx.double(), gx64, rtol=1e-3, atol=1e-3 * gx64.abs().max().item())


@pytest.mark.parametrize(
    "size_in,size_out,c",
    [
        ((4, 4, 4), (8, 8, 8), 32),  # exact 2x, two whole 16-channel vectors
        ((5, 4, 7), (9, 8, 13), 20),  # odd sizes (n -> 2n - 1), a vector tail
        ((3, 3, 3), (5, 6, 6), 3),  # unequal factors, fewer channels than a vector
        ((6, 5), (11, 10), 16),  # 2D
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_upsample_linear_against_float64(size_in, size_out, c, dtype):
    """The C interpolation of the decoder merge: |kernel - ref| <= 2 |torch - ref| + atol, ref in float64 from the
    same (rounded) input, torch = F.interpolate in the same dtype."""
    from leanseg.nn import _cext

    lib = _cext.load()
    if lib is None:
        pytest.skip("no C compiler")
    torch.manual_seed(3)
    x = torch.randn(2, *size_in, c).to(dtype)  # (N, *spatial, C) channels-last
    mode = "trilinear" if len(size_in) == 3 else "bilinear"

    def interp(t):
        return torch.nn.functional.interpolate(t.movedim(-1, 1), size=size_out, mode=mode,
                                               align_corners=False).movedim(1, -1)

    out = _cpu.upsample_linear(lib, torch.empty(2, *size_out, c, dtype=dtype), x)
    ref = interp(x.double())
    err, err_torch = (out.double() - ref).abs().max(), (interp(x).double() - ref).abs().max()
    assert err <= 2 * err_torch + 1e-12, (err, err_torch)
