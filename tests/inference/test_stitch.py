"""SlabStitcher (one stitching pass per window, weights kept across slabs) == MONAI's sliding_window_inference.

float64 against MONAI in float64 (equal up to rounding), and float32 against a float64 reference: the C loop's
error at most twice MONAI's float32 error plus an atol, as for the kernels.
"""

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from leanseg.inference import sliding_window_predict
from leanseg.nn import _cext
from leanseg.stitch import SlabStitcher

ACTIVATIONS = {"softmax": lambda y: torch.softmax(y, dim=1), "sigmoid": torch.sigmoid, "none": lambda y: y}

CASES = [
    ((37, 50), (16, 16), 0.5, "gaussian"),  # 2D, odd sizes
    ((9, 11), (32, 16), 0.25, "gaussian"),  # 2D, smaller than the window: padded on both sides
    ((30, 50, 41), (32, 16, 24), 0.5, "gaussian"),  # 3D, first axis padded (a streamed SEG-Y's first slab)
    ((21, 13, 15), (8, 8, 8), 0.0, "constant"),  # 3D, no overlap: windows tile with a ragged edge
    ((19, 23, 17), (8, 12, 10), 0.0625, "gaussian"),  # 3D, bench stream's overlap
]


def conv_net(spatial_dims: int, out_channels: int, scale: float = 1.0) -> nn.Module:
    """A 3x3(x3) convolution: windows differ near their borders, so the weighting shows."""
    torch.manual_seed(0)
    conv = getattr(nn, f"Conv{spatial_dims}d")(1, out_channels, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(scale)
    return conv.eval()


def monai(net, image, window, overlap, blend, activation):
    """MONAI's sliding window on the image mirrored up to the window (numpy's symmetric padding, as
    sliding_window_predict pads), cropped back."""
    pads = [(max(w - n, 0) // 2, max(w - n, 0) - max(w - n, 0) // 2)
            for n, w in zip(image.shape[2:], window, strict=True)]
    padded = torch.from_numpy(np.pad(image.numpy(), [(0, 0), (0, 0), *pads], mode="symmetric"))
    with torch.no_grad():
        out = sliding_window_inference(padded, window, 1, lambda x: ACTIVATIONS[activation](net(x)), overlap=overlap,
                                       mode=blend)
    return out[(..., *(slice(lo, lo + n) for (lo, _), n in zip(pads, image.shape[2:], strict=True)))]


@pytest.mark.parametrize("shape, window, overlap, blend", CASES)
@pytest.mark.parametrize("activation, channels", [("softmax", 3), ("softmax", 1), ("sigmoid", 2), ("none", 2)])
@pytest.mark.parametrize("c_loop", [True, False], ids=["c", "torch"])
def test_equals_monai(shape, window, overlap, blend, activation, channels, c_loop, monkeypatch):
    if not c_loop:
        monkeypatch.setattr(_cext, "load", lambda *a, **k: None)
    elif _cext.load() is None:
        pytest.skip("no C compiler")
    net = conv_net(len(shape), channels, scale=20.0).double()  # logits of +-50: exp's clamps are reached
    image = torch.randn(1, 1, *shape, dtype=torch.float64)
    ref = monai(net, image, window, overlap, blend, activation)
    with torch.no_grad():
        got = SlabStitcher(net, window, len(shape), activation, overlap=overlap, blend=blend, batch_size=2)(image)
    assert got.dtype == torch.float64 and got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)

    net32 = net.float()
    torch_err = (monai(net32, image.float(), window, overlap, blend, activation).double() - ref).abs()
    with torch.no_grad():
        got32 = SlabStitcher(net32, window, len(shape), activation, overlap=overlap, blend=blend)(image.float())
    assert got32.dtype == torch.float32
    assert ((got32.double() - ref).abs() <= 2 * torch_err + 1e-6 * (1 + ref.abs())).all()  # "none": logits of 50


def test_rows_and_reuse_across_slabs():
    """rows keeps a centre; a second slab of the same shape reuses the grid and starts from a clean accumulator;
    a channels-last network output (the lean network's) is read through its strides."""
    net = conv_net(3, 2).double()

    def channels_last(x):
        return net(x).contiguous(memory_format=torch.channels_last_3d)

    stitch = SlabStitcher(channels_last, (8, 16, 16), 3, "softmax", overlap=0.25)
    for seed in (1, 2):
        image = torch.randn(1, 1, 10, 20, 19, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        ref = monai(net, image, (8, 16, 16), 0.25, "gaussian", "softmax")
        with torch.no_grad():
            got = stitch(image, slice(2, 7))
        torch.testing.assert_close(got, ref[:, :, 2:7], rtol=0, atol=1e-12)


def test_for_model_equals_sliding_window_predict():
    """The streaming path's stitcher (raw network output, activation in the stitching) and with TTA (activation in
    the window predictor) against sliding_window_predict, which runs MONAI's stitching."""
    net = conv_net(3, 3)
    image = torch.randn(1, 1, 12, 21, 18)
    for tta in (False, True):
        expected = sliding_window_predict(net, image, (8, 16, 16), overlap=0.5, tta=tta)
        with torch.no_grad():
            got = SlabStitcher.for_model(net, (8, 16, 16), 3, overlap=0.5, tta=tta)(image)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_output_of_another_size_is_refused():
    stitch = SlabStitcher(lambda x: x[..., ::2], (8, 8), 2, "none")
    with pytest.raises(ValueError, match="window's size"):
        stitch(torch.zeros(1, 1, 8, 8))
