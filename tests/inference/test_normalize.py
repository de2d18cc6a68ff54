"""Robust per-channel z-score (leanseg.normalize): against a float64 reference, and one absurd voxel changes nothing
else."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from leanseg.checkpoint import Normalization
from leanseg.normalize import CLIP_PERCENTILES, ZScore

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _reference(image: np.ndarray, nonzero: bool) -> np.ndarray:
    """Straight from the definition, in float64, on every voxel (no subsampling)."""
    out = np.zeros(image.shape)
    for c, channel in enumerate(image.astype(np.float64)):
        values = channel[channel != 0] if nonzero else channel.ravel()
        low, high = np.percentile(values, CLIP_PERCENTILES)
        clipped = np.clip(values, low, high)
        out[c] = (np.clip(channel, low, high) - clipped.mean()) / clipped.std()
        if nonzero:
            out[c][channel == 0] = 0
    return out


@pytest.mark.parametrize("nonzero", [False, True])
def test_matches_the_reference(nonzero):
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 3.0, size=(2, 20, 21, 22)).astype(np.float32)
    image[:, :5] = 0  # background
    got = ZScore(nonzero)(image)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _reference(image, nonzero), rtol=1e-5, atol=1e-5)
    as_dict = ZScore(nonzero, keys="image")({"image": torch.from_numpy(image), "label": 1})
    np.testing.assert_allclose(as_dict["image"].numpy(), got)
    assert as_dict["label"] == 1


def test_one_absurd_voxel_changes_only_itself():
    if not DATA.is_dir():
        pytest.skip(f"{DATA} (shared test data) is absent")
    from leanseg.io import read_nifti

    case = DATA / "nifti/brats_toolkit_TCGA-DU-7294"
    image, _ = read_nifti(sorted(case.glob("*_bet.nii.gz")))
    norm = Normalization(kind="zscore", nonzero=True).transform()
    clean = norm(image)
    spoiled = image.copy()
    spoiled[0, 120, 120, 77] = 1e20
    dirty = norm(spoiled)
    changed = np.abs(dirty - clean) > 0.02
    changed[0, 120, 120, 77] = False
    assert changed.sum() == 0 and np.abs(dirty).max() < 50
