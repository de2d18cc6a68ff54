"""faultseg3d_unet (FaultSeg3D's network, for comparisons): the shared model checks on odd sizes, and its widths."""

import pytest
import torch

from leanseg.models import create
from tests.models.test_models import ODD, check_forward_backward, num_weights


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_backward_odd_sizes(spatial_dims):
    torch.manual_seed(0)
    model = create("faultseg3d_unet", spatial_dims=spatial_dims, in_channels=2, out_channels=1, features=(4, 8, 12))
    x = torch.randn(2, 2, *ODD[spatial_dims], requires_grad=True)
    check_forward_backward(model, x, (2, 1, *ODD[spatial_dims]))


def test_default_widths_are_the_papers():
    model = create("faultseg3d_unet")
    # by hand: per level two 3x3x3 convs (27 * cin * cout + cout each), then the 1x1x1 head
    def double(cin, cout):
        return 27 * cin * cout + cout + 27 * cout * cout + cout
    widths = [16, 32, 64, 128, 512]
    down = sum(double(a, b) for a, b in zip([1, *widths[:-1]], widths, strict=True))
    up = sum(double(w + s, s) for w, s in zip(widths[:0:-1], widths[-2::-1], strict=True))
    assert num_weights(model) == down + up + 16 + 1
