"""lean(): conversion of existing models (MONAI's UNet, BasicUNet, SegResNet and a plain 2D net)."""

import pytest
import torch
from monai.networks.nets import BasicUNet, SegResNet, UNet
from torch import nn

from leanseg.nn import LeanConv, lean


def n_weights(model):
    return sum(p.numel() for p in model.parameters())


def convs_3x3(model):
    return [m for m in model.modules() if type(m) in (nn.Conv2d, nn.Conv3d) and set(m.kernel_size) == {3}]


MODELS = {
    "monai-unet": lambda: UNet(3, 2, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1),
    "monai-basicunet": lambda: BasicUNet(3, 2, 3, features=(8, 8, 16, 32, 64, 8)),
    "monai-segresnet": lambda: SegResNet(3, init_filters=8, in_channels=2, out_channels=3),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_lean_converts_monai_models(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        shape_before = model(x).shape
    n_convs = len(convs_3x3(model))
    expected_after = n_weights(model) - sum(
        m.weight.numel() - LeanConv.num_weights(3, m.in_channels, m.out_channels) for m in convs_3x3(model)
    )

    report = lean(model)

    assert len(report.replaced) == n_convs > 0
    assert convs_3x3(model) == []
    assert report.weights_after == n_weights(model) == expected_after
    assert report.reduction == pytest.approx(report.weights_before / report.weights_after)
    assert report.reduction > 2
    with torch.no_grad():
        y = model(x)
    assert y.shape == shape_before
    assert torch.isfinite(y).all()


def test_lean_keeps_stride_bias_and_skips_what_it_cannot_replace():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=True),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),  # dilated: kept
        nn.Conv2d(8, 8, 3, padding=1, groups=2),  # grouped: kept
        nn.Conv2d(8, 4, 1),  # 1x1: not a candidate
    )
    report = lean(model)
    assert report.replaced == ["0", "1"]
    assert [name for name, _ in report.skipped] == ["2", "3"]
    assert isinstance(model[0], LeanConv) and model[0].bias is not None and model[0].stride == 1
    assert isinstance(model[1], LeanConv) and model[1].bias is None and model[1].stride == 2
    assert model(torch.randn(1, 3, 15, 17)).shape == (1, 4, 8, 9)
    assert "replaced 2 convolutions" in str(report)
