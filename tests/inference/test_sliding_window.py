"""Sliding window == one whole-volume pass for a network without border effects; streaming == in memory."""

import numpy as np
import pytest
import torch
from torch import nn

from leanseg.inference import sliding_window_predict
from leanseg.stitch import predict_streaming


def pointwise_net(spatial_dims: int, in_channels: int = 2, out_channels: int = 3) -> nn.Module:
    """1x1(x1) convolutions only: every output voxel depends on its own input voxel, so windows cannot differ."""
    conv = getattr(nn, f"Conv{spatial_dims}d")
    torch.manual_seed(0)
    return nn.Sequential(conv(in_channels, 8, 1), nn.ReLU(), conv(8, out_channels, 1)).eval()


CASES = [
    ((1, 2, 37, 29), 16, 0.5, "gaussian"),  # 2D, odd sizes
    ((2, 2, 9, 11), 32, 0.25, "gaussian"),  # 2D, volume smaller than the window
    ((1, 2, 19, 23, 17), (8, 12, 10), 0.5, "gaussian"),  # 3D, odd sizes, anisotropic window
    ((1, 2, 7, 5, 6), 16, 0.5, "constant"),  # 3D, volume smaller than the window
    ((1, 2, 21, 13, 15), 8, 0.0, "constant"),  # 3D, no overlap: windows tile with a ragged edge
]


@pytest.mark.parametrize("shape, window, overlap, blend", CASES)
@pytest.mark.parametrize("tta", [False, True])
def test_equals_whole_volume_pass(shape, window, overlap, blend, tta):
    net = pointwise_net(len(shape) - 2)
    x = torch.randn(shape)
    with torch.no_grad():
        expected = torch.softmax(net(x), dim=1)
    got = sliding_window_predict(net, x, window, overlap=overlap, batch_size=3, blend=blend, tta=tta)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_sigmoid_activation():
    net = pointwise_net(3)
    x = torch.randn(1, 2, 10, 9, 8)
    got = sliding_window_predict(net, x, 6, activation="sigmoid")
    torch.testing.assert_close(got, torch.sigmoid(net(x)).detach(), rtol=1e-5, atol=1e-6)


def test_tta_averages_mirrorings():
    torch.manual_seed(0)
    net = nn.Conv2d(1, 2, 3, padding=1).eval()  # not mirror-symmetric: TTA changes the result
    x = torch.randn(1, 1, 12, 10)
    plain = sliding_window_predict(net, x, (12, 10), tta=False)  # one window, no padding: net(x) itself
    mirrored = sliding_window_predict(net, x, (12, 10), tta=True)
    with torch.no_grad():
        flips = [(), (2,), (3,), (2, 3)]
        expected = sum(torch.softmax(net(x.flip(f) if f else x), 1).flip(f) if f else torch.softmax(net(x), 1)
                       for f in flips) / 4
    torch.testing.assert_close(mirrored, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(plain, mirrored)


@pytest.mark.parametrize("shape, window", [
    ((1, 1, 5, 6, 7), 9),  # 3D, smaller than the window on every axis
    ((2, 1, 7, 4), (8, 8)),  # 2D, two images, odd padding on one axis
])
def test_small_volumes_are_mirrored_up_to_the_window(shape, window):
    """A volume smaller than the window is padded by mirroring it about its border (not zeros, which a seismic or EM
    network reads as an edge, nor a block of repeated border voxels): a 3x3 convolution sees, at the border, the
    same voxels as on numpy's symmetric padding of the input (reflected as often as needed), in float64."""
    torch.manual_seed(0)
    conv = getattr(nn, f"Conv{len(shape) - 2}d")(1, 2, 3, padding=1).eval()
    x = torch.randn(shape) + 3  # far from zero: zero padding would show at every border voxel
    got = sliding_window_predict(conv, x, window, activation="none")
    dims = len(shape) - 2
    win = (window,) * dims if isinstance(window, int) else window
    # (w - n) // 2 before the volume and the rest after, as MONAI pads; axes at least as large as the window not at all
    pads = [(max(0, w - n) // 2, max(0, w - n) - max(0, w - n) // 2) for n, w in zip(shape[2:], win, strict=True)]
    padded = torch.from_numpy(np.pad(x.double().numpy(), [(0, 0), (0, 0), *pads], mode="symmetric"))
    with torch.no_grad():
        full = conv.double()(padded)
    expected = full[(..., *(slice(lo, lo + n) for (lo, _), n in zip(pads, shape[2:], strict=True)))].float()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("slab, halo", [(4, 2), (5, 0), (100, 3)])
def test_streaming_equals_in_memory(slab, halo):
    net = pointwise_net(3, in_channels=1, out_channels=2)
    volume = np.random.default_rng(0).normal(size=(1, 23, 9, 11)).astype(np.float32)
    out = np.full((2, 23, 9, 11), np.nan, dtype=np.float32)
    reads = []

    def read(lo, hi):
        reads.append(hi - lo)
        return volume[:, lo:hi]

    def write(start, probs):
        out[:, start: start + probs.shape[1]] = probs.numpy()

    predict_streaming(net, read, 23, write, window=(4, 8, 8), slab=slab, halo=halo, progress=False)
    expected = sliding_window_predict(net, torch.from_numpy(volume)[None], (4, 8, 8))[0].numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert max(reads) <= slab + 2 * halo  # memory is bounded by the slab, never the volume
