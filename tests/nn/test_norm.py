"""Channels-last InstanceNorm against PyTorch's F.instance_norm (float64 reference), values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from leanseg.nn.norm import InstanceNorm

CASES = [
    ((2, 5, 7, 9, 6), True),  # 3D, odd sizes
    ((3, 4, 11, 13), True),  # 2D
    ((1, 17, 5, 3, 70), False),  # no affine; more voxels than one block of the C kernel
]


@pytest.mark.parametrize("shape,affine", CASES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_matches_instance_norm_float64(shape, affine, channels_last):
    torch.manual_seed(0)
    norm = InstanceNorm(shape[1], affine=affine).double()
    if affine:
        with torch.no_grad():
            norm.weight.normal_()
            norm.bias.normal_()
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 2).requires_grad_(True)  # mean and scale away from 0, 1
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
        x.requires_grad_(True)
    y = norm(x)
    y_ref = F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    if channels_last:
        assert y.movedim(1, -1).is_contiguous()  # stays channels-last
    g = torch.randn_like(y_ref)
    params = [x] + ([norm.weight, norm.bias] if affine else [])
    for a, b in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(y_ref, params, g), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_float32_close_to_float64():
    torch.manual_seed(1)
    x = torch.randn(2, 32, 24, 24, 24).contiguous(memory_format=torch.channels_last_3d) * 5 + 3
    norm = InstanceNorm(32)
    y = norm(x)
    y64 = F.instance_norm(x.double(), weight=norm.weight.double(), bias=norm.bias.double())
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
