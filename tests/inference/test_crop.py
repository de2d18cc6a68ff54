"""Cropping to the non-zero box before the sliding window: exact inside the box, background outside, fewer windows."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from leanseg.inference import argmax_channels, nonzero_box, paste
from leanseg.io import find_case_files
from leanseg.prediction import predict

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
TCGA = DATA / "nifti/brats_toolkit_TCGA-DU-7294"
CHANNELS = ["t1", "t1c", "t2", "flair"]


def reference_box(image: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """Independent of nonzero_box: min and max of the coordinates of every non-zero voxel."""
    where = np.argwhere((image != 0).any(0))
    if len(where) == 0:
        return None
    lo, hi = where.min(0) - margin, where.max(0) + 1 + margin
    return tuple(slice(max(0, int(a)), min(n, int(b))) for a, b, n in zip(lo, hi, image.shape[1:], strict=True))


@pytest.mark.parametrize("shape, margin", [
    ((2, 17, 23, 11), 0),  # 3D, odd sizes
    ((3, 19, 13), 2),  # 2D, a margin
    ((1, 9, 8, 7), 50),  # a margin larger than the grid: clipped
])
def test_nonzero_box_matches_reference(shape, margin):
    rng = np.random.default_rng(0)
    image = np.zeros(shape, np.float32)
    inner = tuple(slice(2, n - 3) for n in shape[1:])
    image[(0, *inner)] = rng.normal(size=[s.stop - s.start for s in inner]) * (rng.random() > 0.0)
    image[(-1, *(slice(1, 2) for _ in shape[1:]))] = -1.0  # another channel reaches further out
    assert nonzero_box(image, margin) == reference_box(image, margin)


def test_nonzero_box_of_zeros_is_none():
    assert nonzero_box(np.zeros((2, 5, 6, 7), np.float32)) is None


def test_paste_fills_outside():
    probs = torch.rand(3, 2, 4, 5)
    out = paste(probs, (slice(1, 3), slice(0, 4), slice(2, 7)), (6, 4, 9), [1.0, 0.0, 0.0])
    assert out.shape == (3, 6, 4, 9)
    torch.testing.assert_close(out[:, 1:3, :, 2:7], probs)
    mask = torch.ones(6, 4, 9, dtype=torch.bool)
    mask[1:3, :, 2:7] = False
    assert (out[0][mask] == 1).all() and (out[1:][:, mask] == 0).all()


@pytest.mark.parametrize("channels", [2, 5])
def test_argmax_channels_equals_argmax(channels):
    values = np.random.default_rng(0).integers(0, 4, size=(channels, 7, 9, 11)).astype(np.float32)  # many ties
    got = argmax_channels(torch.from_numpy(values))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.argmax(values, axis=0))  # ties: the first channel, as numpy


class PointwiseNet(nn.Module):
    """Two linear maps over channels: every output voxel sees its own input voxel only, so no window can change
    it. Linear on channels-last: torch's 1x1x1 conv3d takes a second per 128^3 window on this CPU."""

    def __init__(self, in_channels=4, out_channels=3):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(in_channels, 8), nn.ReLU(), nn.Linear(8, out_channels))
        self.windows = 0

    def forward(self, x):  # (N, C, D, H, W)
        self.windows += x.shape[0]
        return self.net(x.movedim(1, -1)).movedim(-1, 1)


def brats_meta(**extra) -> dict:
    kwargs = {"spatial_dims": 3, "in_channels": 4, "out_channels": 3}
    return {"model": "pointwise", "model_kwargs": kwargs, "channels": CHANNELS,
            "regions": {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]},
            "normalization": {"kind": "zscore", "nonzero": True}, "window": [128, 128, 128], **extra}


def run_both(inputs, tmp_path, meta):
    """(cropped, uncropped) predictions: labels, probabilities and windows run."""
    results = []
    for crop in (None, False):  # None: the default, which crops for a zscore-nonzero checkpoint
        net = PointwiseNet().eval()
        out = tmp_path / f"seg_{crop}.nii"  # uncompressed: gzip of the probabilities dominates
        predict(inputs, (net, meta), output=out, crop=crop, probabilities=True, progress=False)
        labels = np.asanyarray(nib.load(out).dataobj)
        probs = np.asanyarray(nib.load(tmp_path / f"seg_{crop}_probs.nii").dataobj)
        results.append((labels, probs, net.windows))
    return results


def check_crop(inputs, tmp_path, meta):
    image = np.stack([np.asanyarray(nib.load(p).dataobj) for p in inputs])  # (C, X, Y, Z) as on disk
    box = reference_box(image, 0)
    (labels, probs, windows), (labels_full, probs_full, windows_full) = run_both(inputs, tmp_path, meta)
    inside = np.zeros(labels.shape, bool)
    inside[box] = True
    # inside the box the same numbers: the statistics of a nonzero z-score come from voxels all in the box
    np.testing.assert_allclose(probs[inside], probs_full[inside], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels[inside], labels_full[inside])
    assert (labels[~inside] == 0).all() and (probs[~inside] == 0).all()  # sigmoid regions: background is 0
    return windows, windows_full


@pytest.mark.slow
@pytest.mark.skipif(not TCGA.is_dir(), reason=f"{TCGA} (shared test data) is absent")
def test_crop_on_real_brats_case(tmp_path):
    windows, windows_full = check_crop(find_case_files(TCGA, CHANNELS), tmp_path, brats_meta())
    assert (windows, windows_full) == (8, 18)  # box 129x162x131 of the 240x240x155 grid


def test_crop_on_synthetic_case(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name in CHANNELS:
        volume = np.zeros((40, 36, 30), np.float32)
        volume[5:27, 9:30, 3:21] = rng.normal(size=(22, 21, 18)) + 2
        paths.append(tmp_path / f"case_{name}.nii.gz")
        nib.save(nib.Nifti1Image(volume, np.diag([-1.0, 1.0, 1.0, 1.0])), paths[-1])  # flipped: crop in RAS
    windows, windows_full = check_crop(paths, tmp_path, brats_meta(window=[16, 16, 16]))
    assert windows < windows_full


def test_crop_softmax_background_is_label_zero(tmp_path):
    volume = np.zeros((4, 20, 20, 20), np.float32)
    volume[:, 5:12, 6:15, 2:9] = 1 + np.random.default_rng(0).random((4, 7, 9, 7))
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(volume, 0, -1), np.eye(4)), path)  # 4D, channels last
    meta = brats_meta(labels={"rest": 5, "background": 0, "tumour": 1}, window=[8, 8, 8])
    del meta["regions"]
    predict(path, (PointwiseNet().eval(), meta), output=tmp_path / "seg.nii.gz", crop=True, probabilities=True,
            progress=False)
    probs = np.asanyarray(nib.load(tmp_path / "seg_probs.nii.gz").dataobj)  # (X, Y, Z, K)
    labels = np.asanyarray(nib.load(tmp_path / "seg.nii.gz").dataobj)
    assert (probs[0, 0, 0] == [0, 1, 0]).all() and labels[0, 0, 0] == 0
