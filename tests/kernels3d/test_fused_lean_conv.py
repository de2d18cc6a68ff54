"""The fused kernels against PyTorch in the same dtype and a float64 reference (interpreter on CPU, CUDA on GPU).

For the output and every gradient: max|kernel - ref64| <= 2 max|torch - ref64| + atol, atol scaled by the
reference's magnitude and the dtype's resolution.
"""


import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install leanseg[gpu], or [dev])")

import kernels3d  # noqa: E402
from kernels3d.fused import reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ATOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CASES = [
    # (N, spatial, C_in, C_out, stride)
    (2, (5, 7, 9), 4, 8, 1),  # 3D, the 4 MRI modalities: C < 16 padded to one tile, odd sizes
    (1, (5, 6, 9), 20, 17, 2),  # 3D stride 2, odd and even sizes, C_in > C_out, two channel tiles each
    (1, (4, 5, 3), 3, 21, 2),  # 3D stride 2, C_in < C_out: stencil on 3 of 21 channels
    (2, (11, 13), 6, 3, 1),  # 2D (the depth-1 case), C_out < C_in
    (1, (9, 8), 3, 24, 2),  # 2D stride 2
]


def _inputs(n, spatial, c_in, c_out, residual=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = len(spatial)
    x = torch.randn(n, c_in, *spatial, generator=g, dtype=torch.float64)
    w = torch.randn(c_out, c_in, generator=g, dtype=torch.float64) / c_in**0.5
    s = torch.randn(min(c_in, c_out), 2 * d, generator=g, dtype=torch.float64) / 2
    b = torch.randn(c_out, generator=g, dtype=torch.float64)
    return [x, w, s, b]


def _run(fn, tensors, dtype, grad_out, **kw):
    leaves = [t.to(DEVICE, dtype).requires_grad_() for t in tensors]
    x, w, s, b, *r = leaves
    y = fn(x, w, s, b, residual=r[0] if r else None, **kw)
    grads = torch.autograd.grad(y, leaves, grad_out.to(DEVICE, dtype))
    return [t.detach().double().cpu() for t in (y, *grads)]


def _assert_close(kernel, torch_same, ref64, dtype, names):
    for name, k, t, r in zip(names[: len(kernel)], kernel, torch_same, ref64, strict=True):
        atol = ATOL[dtype] * max(1.0, r.abs().max().item())
        err, budget = (k - r).abs().max().item(), 2 * (t - r).abs().max().item() + atol
        assert err <= budget, f"{name}: |kernel - ref64| = {err:.3g} > {budget:.3g}"


def _compare(n, spatial, c_in, c_out, stride, dtype, residual=False, **kw):
    tensors = _inputs(n, spatial, c_in, c_out)
    ref64 = reference(*(t.to(DEVICE) for t in tensors), stride=stride, **kw)
    if residual:
        tensors.append(torch.randn(ref64.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    grad_out = torch.randn(ref64.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    names = ["y", "dx", "dW", "dS", "dbias", "dresidual"]
    kernel = _run(kernels3d.lean_conv, tensors, dtype, grad_out, stride=stride, **kw)
    torch_same = _run(reference, tensors, dtype, grad_out, stride=stride, **kw)
    exact = _run(reference, tensors, torch.float64, grad_out, stride=stride, **kw)
    _assert_close(kernel, torch_same, exact, dtype, names)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("n, spatial, c_in, c_out, stride", CASES)
def test_forward_and_gradients(n, spatial, c_in, c_out, stride, dtype):
    _compare(n, spatial, c_in, c_out, stride, dtype)


@pytest.mark.parametrize("n, spatial, c_in, c_out, stride, activation", [
    (1, (4, 5, 7), 5, 5, 1, "relu"),  # 3D residual block: bias + residual + ReLU
    (2, (7, 6), 4, 4, 1, "leaky_relu"),  # 2D, LeakyReLU
    (1, (5, 5, 4), 6, 9, 2, None),  # stride 2, residual without activation
])
def test_epilogues(n, spatial, c_in, c_out, stride, activation):
    _compare(n, spatial, c_in, c_out, stride, torch.float32, residual=True, activation=activation,
             negative_slope=0.1)


def test_layouts():
    """Contiguous NCDHW and channels-last inputs give the same y, returned channels-last."""
    x, w, s, b = (t.float().to(DEVICE) for t in _inputs(1, (3, 4, 5), 5, 7))
    y = kernels3d.lean_conv(x, w, s, b)
    y_cl = kernels3d.lean_conv(x.to(memory_format=torch.channels_last_3d), w, s, b)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(y, y_cl, rtol=0, atol=0)


def test_bad_activation():
    x, w, s, b = (t.float().to(DEVICE) for t in _inputs(1, (3, 4), 2, 2))
    with pytest.raises(ValueError, match="activation"):
        kernels3d.lean_conv(x, w, s, b, activation="gelu")


def test_available():
    assert kernels3d.available()


# ---- GPU, real sizes ----


GPU_CASES = [
    # (N, spatial, C_in, C_out)
    (2, (64, 64, 64), 32, 32),  # 3D, a square layer
    (2, (96, 96, 96), 4, 32),  # 3D stem: 4 MRI modalities in
    (2, (512, 512), 64, 64),  # 2D, the depth-1 case at image size
]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("n, spatial, c_in, c_out", GPU_CASES)
def test_gpu_real_size(n, spatial, c_in, c_out, stride, dtype):
    _compare(n, spatial, c_in, c_out, stride, dtype)


@pytest.mark.gpu
@gpu
def test_gpu_dispatch():
    """leanseg's lean_conv sends CUDA tensors to these kernels."""
    from leanseg.nn.functional import lean_conv

    x, w, s, b = (t.float().cuda() for t in _inputs(2, (8, 9, 10), 8, 8))
    torch.testing.assert_close(lean_conv(x, w, s, b, 2), kernels3d.lean_conv(x, w, s, b, 2), rtol=0, atol=0)


@pytest.mark.gpu
@gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_properties(0).total_memory < 40 * 2**30,
                    reason="needs a CUDA device with 40 GB")
def test_gpu_int64_offsets():
    """x with more than 2**31 elements: the last depth slices, whose offsets pass 2**31, against a crop."""
    torch.manual_seed(0)
    c = 136  # 136 x 256^3 > 2**31 elements
    x = torch.randn(1, 256, 256, 256, c, device="cuda", dtype=torch.bfloat16).movedim(-1, 1)
    assert x.numel() > 2**31
    w = torch.randn(c, c, device="cuda", dtype=torch.bfloat16) / c**0.5
    s = torch.randn(c, 6, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(c, device="cuda", dtype=torch.bfloat16)
    x.requires_grad_()
    y = kernels3d.lean_conv(x, w, s, b)
    g = torch.randn_like(y)
    dx, db = torch.autograd.grad(y, (x, b), g)
    crop = x.detach()[:, :, -3:].double().requires_grad_()
    y_ref = reference(crop, w.double(), s.double(), b.double())
    (dx_ref,) = torch.autograd.grad(y_ref, crop, g[:, :, -3:].double())
    # crop slice 0 lacks its -depth neighbour; slices 1 and 2 are exact
    torch.testing.assert_close(y[:, :, -2:].double(), y_ref[:, :, 1:], rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(dx[:, :, -2:].double(), dx_ref[:, :, 1:], rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(db.double(), g.sum((0, 2, 3, 4), dtype=torch.float64), rtol=2e-2, atol=1.0)


def test_autotune_pruning():
    """Tiles wider than the channels (beyond tl.dot's 16) are dropped; something always survives."""
    from kernels3d.fused import TILES, _channel_prune

    configs = [triton.Config({"BLOCK_P": bp, "BLOCK_O": bo, "BLOCK_K": bk}) for bp, bo, bk, _ in TILES]
    prune = _channel_prune("C_OUT", "C_IN")
    kept = prune(configs, {"C_IN": 4, "C_OUT": 4})
    assert [c.kwargs["BLOCK_O"] for c in kept] == [16] and [c.kwargs["BLOCK_K"] for c in kept] == [16]
    kept = prune(configs, {"C_IN": 128, "C_OUT": 32})
    assert {c.kwargs["BLOCK_O"] for c in kept} == {16, 32}
    assert len(prune(configs, {"C_IN": 128, "C_OUT": 128})) == len(TILES)


def test_launch_skips_the_checks_lean_conv_runs(monkeypatch):
    """leanseg's dispatcher checks once and calls fused.launch, which does not check again; the public
    kernels3d.lean_conv, for direct callers, checks."""
    from kernels3d import fused
    from leanseg.nn import backend

    assert backend.triton_launch() is fused.launch
    calls = []
    real = fused.check_args
    monkeypatch.setattr(fused, "check_args", lambda *a: calls.append(1) or real(*a))
    x, w, s, b = (t.float().to(DEVICE) for t in _inputs(1, (3, 4, 5), 4, 4))
    y = fused.launch(x, w, s, b, 1)
    assert calls == []
    torch.testing.assert_close(kernels3d.lean_conv(x, w, s, b, 1), y)
    assert calls == [1]
    with pytest.raises(ValueError, match="input has 4 channels, the layer expects in_channels=3"):
        kernels3d.lean_conv(x, w[:, :3], s[:3], b, 1)
