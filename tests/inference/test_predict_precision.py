"""`precision` of leanseg.predict / `--precision` of `leanseg predict`: fp32 unchanged, bf16 close, clear errors."""

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from leanseg import save_model
from leanseg.cli.main import main
from leanseg.errors import LeanSegError
from leanseg.models import _registry
from leanseg.nn import LeanConv, precision
from leanseg.prediction import predict


class TinyLean(nn.Module):
    def __init__(self, spatial_dims=3, in_channels=2, out_channels=3):
        super().__init__()
        self.net = nn.Sequential(LeanConv(spatial_dims, in_channels, 8, bias=True), nn.ReLU(),
                                 LeanConv(spatial_dims, 8, out_channels, bias=True))

    def forward(self, x):  # (N, C, D, H, W)
        return self.net(x)


@pytest.fixture
def case(tmp_path, monkeypatch):
    monkeypatch.setitem(_registry._MODELS, "tiny_lean", TinyLean)
    torch.manual_seed(0)
    kwargs = {"spatial_dims": 3, "in_channels": 2, "out_channels": 3}
    ckpt = save_model(TinyLean(**kwargs), tmp_path / "m.safetensors", model="tiny_lean", model_kwargs=kwargs,
                      labels={"a": 0, "b": 1, "c": 2}, normalization="zscore", window=[16, 16, 16])
    image = np.random.default_rng(0).normal(size=(23, 19, 17, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "img.nii.gz")
    return tmp_path / "img.nii.gz", ckpt


def test_fp32_is_the_model_itself():
    model = nn.Conv3d(1, 1, 1)
    assert precision.prepare(model, "fp32") is model


def test_unknown_precision():
    with pytest.raises(LeanSegError, match="unknown precision 'fp16'"):
        precision.prepare(nn.Conv3d(1, 1, 1), "fp16")


def test_bf16_refused_without_cpu_support(case, monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    image, ckpt = case
    assert main(["predict", str(image), "-m", str(ckpt), "--precision", "bf16", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leanseg: error: precision bf16: this CPU has neither AVX512-BF16 nor AMX-BF16")
    assert err.count("\n") == 0


@pytest.mark.skipif(not precision.cpu_supports_bf16(), reason="this CPU has no native bfloat16")
def test_bf16_prediction_is_close_to_fp32(case, tmp_path):
    image, ckpt = case
    for p in ("fp32", "bf16"):
        predict(image, ckpt, output=tmp_path / f"{p}.nii.gz", precision=p, probabilities=True, progress=False)
    probs = {p: np.asanyarray(nib.load(tmp_path / f"{p}_probs.nii.gz").dataobj) for p in ("fp32", "bf16")}
    assert probs["bf16"].dtype == np.float32  # blended and stored in float32 whatever the network's dtype
    assert 0 < np.abs(probs["bf16"] - probs["fp32"]).max() < 0.05  # bf16 has 8 bits of mantissa
    labels = {p: np.asanyarray(nib.load(tmp_path / f"{p}.nii.gz").dataobj) for p in ("fp32", "bf16")}
    assert (labels["bf16"] == labels["fp32"]).mean() > 0.97


def test_python_api_errors_name_parameters_not_flags(case):
    image, ckpt = case
    for kwargs, message in (({"device": "mps"}, "device 'mps'"), ({"overlap": 2.0}, "overlap must be"),
                            ({"batch_size": 0}, "batch_size must be")):
        with pytest.raises(LeanSegError, match=message) as err:
            predict(image, ckpt, progress=False, **kwargs)
        assert "--" not in str(err.value)
