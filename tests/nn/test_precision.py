"""bfloat16 on the CPU: the C kernels against PyTorch in bfloat16 and a float64 reference, and a whole model
prepared with leanseg.nn.precision.prepare against its float32 self."""

import pytest
import torch

from leanseg.errors import LeanSegError
from leanseg.models import create
from leanseg.nn import ConvNormAct, _cext, _cpu, lean_conv_reference, precision
from leanseg.nn._cpu import conv_forward
from leanseg.nn.norm import channel_sums, norm_act_

needs_bf16 = pytest.mark.skipif(not precision.cpu_supports_bf16(), reason="CPU without native bfloat16")


@pytest.mark.parametrize("d,stride", [(3, 1), (3, 2), (2, 1)])
@pytest.mark.parametrize("cin,cout", [(24, 24), (40, 16), (8, 72)])
def test_bf16_lean_conv_as_close_as_torch_bf16(d, stride, cin, cout):
    """|kernel - ref| <= 2 |torch bf16 - ref| + atol, elementwise in the max: the kernels accumulate in float32
    and round once to bfloat16, so they should not be worse than PyTorch's own bfloat16 arithmetic."""
    torch.manual_seed(7)
    sizes = (9, 11, 7) if d == 3 else (13, 9)
    x = torch.randn(2, *sizes, cin).to(torch.bfloat16)  # (N, *spatial, C) channels-last
    w = (torch.randn(cout, cin) / cin**0.5).to(torch.bfloat16)
    s = (torch.randn(min(cin, cout), 2 * d) / 3).to(torch.bfloat16)
    ref = lean_conv_reference(x.movedim(-1, 1).double(), w.double(), s.double(), None, stride).movedim(1, -1)
    y, s1, s2 = conv_forward(x, w, s.t().contiguous(), None, stride, stats=True)
    y_torch = lean_conv_reference(x.movedim(-1, 1), w, s, None, stride).movedim(1, -1)
    err, err_torch = (y.double() - ref).abs().max(), (y_torch.double() - ref).abs().max()
    assert err <= 2 * err_torch + 1e-3, (err, err_torch)
    dims = tuple(range(1, d + 1))
    torch.testing.assert_close(s1, y.double().sum(dims), rtol=1e-6, atol=1e-6)  # the sums of the stored bf16 data
    torch.testing.assert_close(s2, y.double().square().sum(dims), rtol=1e-6, atol=1e-6)


def _with_lib(monkeypatch, lib):
    monkeypatch.setattr(_cext, "load", lambda bf16_simd=True: lib)


@pytest.mark.parametrize(
    "c,m",
    [
        (32, 32),  # two whole 16-channel vectors, the U-Net's level 0
        (40, 24),  # a vector tail, and channels past the stencil's m that only the statistics read
        (5, 3),  # fewer channels than one vector
    ],
)
def test_bf16_vector_loops_equal_portable_loops(monkeypatch, c, m):
    """The AVX512-BF16 loops (gather with statistics, norm + activation, channel sums) do the portable loops'
    float operations in the same order: equal bit for bit (inputs without subnormals, which the instruction
    flushes). Where the CPU lacks AVX512-BF16 both libraries are the portable one and the test still runs."""
    lib = _cext.load()
    if lib is None:
        pytest.skip("no C compiler")
    port = _cext.load(bf16_simd=False)
    assert port.bf16_simd() == 0
    torch.manual_seed(11)
    x = torch.randn(2, 7, 9, 11, c).to(torch.bfloat16)  # (N, D, H, W, C) channels-last
    y0 = torch.randn(2, 7, 9, 11, c).to(torch.bfloat16)
    taps = (torch.randn(6, m) / 3).to(torch.bfloat16)
    scale, shift = torch.rand(2, c, dtype=torch.float64) + 0.5, torch.randn(2, c, dtype=torch.float64)
    results = []
    for one in (lib, port):
        _with_lib(monkeypatch, one)
        y = y0.clone()
        sums = _cpu.stencil_gather_(y, x, taps, 1, stats=True)
        a = torch.empty_like(y).view(2, -1, c)
        norm_act_(one, a, y.view(2, -1, c), scale, shift, 0.01)
        results.append((y, *sums, a, *channel_sums(one, a, y.view(2, -1, c))))
    for fast, slow in zip(*results, strict=True):
        assert torch.equal(fast, slow)
    # and the statistics are those of the stored bf16 data
    torch.testing.assert_close(results[0][1], results[0][0].double().sum((1, 2, 3)), rtol=1e-6, atol=1e-6)


@needs_bf16
def test_bf16_block_close_to_float32():
    """ConvNormAct in bfloat16 (instance-norm statistics in float64 from the bf16 data) against float32: within
    a few bf16 roundings (2^-8 relative each) of the normalised output, whose values are O(1)."""
    torch.manual_seed(8)
    block = ConvNormAct(3, 32, 32).eval()
    x = torch.randn(1, 32, 16, 20, 12).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        y32 = block(x)
        yb = block.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb.float(), y32, rtol=0, atol=4 * 2**-8 * y32.abs().max().item())


@needs_bf16
def test_prepare_bf16_model_end_to_end():
    """A LeanUNet (dense first conv, lean convs, decoder merges, 1x1 head) prepared in bf16 takes and returns
    float32; its logits stay within 5% (relative L2) of float32. Random weights make every layer's rounding count:
    about 20 layers of 2^-8 relative error, which a trained model's margins absorb (Dice is checked on the zoo)."""
    torch.manual_seed(9)
    model = create("lean_unet", spatial_dims=3, in_channels=4, out_channels=3, features=(16, 32, 64)).eval()
    x = torch.randn(1, 4, 24, 28, 20)
    with torch.inference_mode():
        y32 = model(x)
        precision.prepare(model, "bf16")
        yb = model(x)
    assert yb.dtype == torch.float32 and next(model.parameters()).dtype == torch.bfloat16
    assert ((yb - y32).norm() / y32.norm()).item() < 0.05
    precision.prepare(model, "fp32")  # back to float32 weights (rounded to bf16 on the way) and no casting hooks
    assert next(model.parameters()).dtype == torch.float32
    assert not model._forward_pre_hooks and not model._forward_hooks


def test_bf16_refused_where_the_cpu_lacks_it(monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    model = ConvNormAct(3, 4, 8)
    with pytest.raises(LeanSegError, match="neither AVX512-BF16 nor AMX-BF16.*use precision fp32"):
        precision.prepare(model, "bf16")
    assert next(model.parameters()).dtype == torch.float32  # untouched


def test_unknown_precision():
    with pytest.raises(LeanSegError, match="unknown precision 'bf61'; did you mean 'bf16'"):
        precision.prepare(ConvNormAct(3, 4, 8), "bf61")
