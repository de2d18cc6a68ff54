"""NaN never becomes a silent all-background label map: a non-finite voxel given to ``leanseg.segment`` and a
non-finite probability out of the network are errors that name the stage."""

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

import leanseg
from leanseg.checkpoint import CheckpointMeta
from leanseg.cli.main import main
from leanseg.errors import LeanSegError
from leanseg.models import _registry


class Overflowing(nn.Module):
    """Finite weights, non-finite output where the input is large: exp(1000) = inf, and softmax(inf) = NaN."""

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(out_channels))

    def forward(self, x):  # (N, 1, D, H, W) -> (N, 2, D, H, W)
        return torch.exp(x * 1000.0) * self.scale.view(1, -1, *[1] * (x.ndim - 2))


META = CheckpointMeta(model="overflowing", model_kwargs={"spatial_dims": 3, "in_channels": 1, "out_channels": 2},
                      labels={"background": 0, "thing": 1}, window=(8, 8, 8))


def test_a_nan_voxel_given_to_segment_is_refused():
    array = np.random.default_rng(0).normal(size=(1, 8, 8, 8)).astype(np.float32)
    array[0, 3, 3, 3] = np.nan
    with pytest.raises(LeanSegError, match="array: 1 voxels are NaN or infinite"):
        leanseg.segment(array, (Overflowing(), META))


def test_a_non_finite_network_output_is_an_error_not_background(tmp_path, capsys, monkeypatch):
    array = np.zeros((1, 8, 8, 8), dtype=np.float32)
    assert leanseg.segment(array, (Overflowing(), META)).shape == (8, 8, 8)  # small inputs: finite, no error
    array[0, 2:5, 2:5, 2:5] = 5.0  # exp(5000) overflows
    with pytest.raises(LeanSegError, match="the network's output has .* NaN or infinite probabilities"):
        leanseg.segment(array, (Overflowing(), META))
    monkeypatch.setitem(_registry._MODELS, "overflowing", Overflowing)
    model = leanseg.save_model(Overflowing(), tmp_path / "m.safetensors", META)
    nib.save(nib.Nifti1Image(array[0], np.eye(4)), tmp_path / "x.nii.gz")
    out = tmp_path / "p.nii.gz"
    assert main(["predict", str(tmp_path / "x.nii.gz"), "-m", str(model), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN or infinite probabilities" in err, err
    assert not out.exists()
