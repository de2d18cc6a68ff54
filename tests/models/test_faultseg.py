"""faultseg3d_unet (FaultSeg3D's network, for comparisons): its widths and weight count."""

import torch

from leanseg.models import create

# forward and backward on small sizes, every parameter's gradient and a checkpoint round trip: the registry-wide
# tests of tests/models/test_models.py (MONAI_SMALL)


def num_weights(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_widths_are_the_papers():
    model = create("faultseg3d_unet")
    # by hand: per level two 3x3x3 convs (27 * cin * cout + cout each), then the 1x1x1 head
    def double(cin, cout):
        return 27 * cin * cout + cout + 27 * cout * cout + cout
    widths = [16, 32, 64, 128, 512]
    down = sum(double(a, b) for a, b in zip([1, *widths[:-1]], widths, strict=True))
    up = sum(double(w + s, s) for w, s in zip(widths[:0:-1], widths[-2::-1], strict=True))
    assert num_weights(model) == down + up + 16 + 1
