"""The 1x1 head/projection conv: its one-thread GEMM path equals nn.Conv in float64, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from leanseg.nn.factories import pointwise_conv


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the GEMM path is taken with one thread only (PyTorch's slow 1x1 case)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_gemm_path_matches_conv_in_float64(one_thread, d, bias):
    g = torch.Generator().manual_seed(d)
    layer = pointwise_conv(d, 5, 3, bias=bias)
    fmt = torch.channels_last_3d if d == 3 else torch.channels_last
    x = torch.randn((2, 5) + (7, 6, 5)[:d], generator=g).contiguous(memory_format=fmt).requires_grad_(True)
    y = layer(x)
    assert y.is_contiguous(memory_format=fmt)  # the GEMM path ran (nn.Conv's fallback returns NCHW order)
    dy = torch.randn(y.shape, generator=g)
    y.backward(dy)

    conv = F.conv3d if d == 3 else F.conv2d
    w64 = layer.weight.detach().double().requires_grad_(True)
    b64 = layer.bias.detach().double().requires_grad_(True) if bias else None
    x64 = x.detach().double().contiguous().requires_grad_(True)
    ref = conv(x64, w64, b64)
    ref.backward(dy.double())
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad.double(), w64.grad, rtol=1e-5, atol=1e-5)
    if bias:
        torch.testing.assert_close(layer.bias.grad.double(), b64.grad, rtol=1e-5, atol=1e-5)
