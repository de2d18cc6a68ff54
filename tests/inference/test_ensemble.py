"""Ensembles, uncertainty maps and --postprocess in `leanseg predict`, on a crop of a real BraTS 2015 case."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from leanseg import save_model
from leanseg.cli.main import main
from leanseg.labels import LabelManager
from leanseg.models import _registry
from leanseg.nn import LeanConv
from leanseg.postprocess import Postprocess
from leanseg.prediction import predict

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CASE = DATA / "nifti/brats2015_deepmedic/brats_2013_pat0006_1"
needs_data = pytest.mark.skipif(not CASE.is_dir(), reason=f"{CASE} (shared BraTS 2015 case) is absent")
REGIONS = {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}


class TinyEnsembleNet(nn.Module):
    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = LeanConv(spatial_dims, in_channels, out_channels, bias=True)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(_registry._MODELS, "tiny_ensemble_net", TinyEnsembleNet)


def checkpoint(path: Path, seed: int, channels=("flair", "t1c"), **meta) -> Path:
    kwargs = {"spatial_dims": 3, "in_channels": len(channels), "out_channels": 3}
    torch.manual_seed(seed)
    # the window is the crop's size: one window and no padding, so the network alone is the reference
    fields = {"channels": list(channels), "regions": REGIONS, "normalization": "none", "window": [40, 44, 36]}
    return save_model(TinyEnsembleNet(**kwargs), path, model="tiny_ensemble_net", model_kwargs=kwargs,
                      **(fields | meta))


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> list[Path]:
    """A 40x44x36 crop of the real case through its tumour, two channels, with the case's orientation."""
    folder = tmp_path_factory.mktemp("crop")
    files = []
    for name in ("Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd"):
        img = nib.load(CASE / f"{name}.nii.gz")
        files.append(folder / f"{name}.nii.gz")
        nib.save(img.slicer[100:140, 90:134, 60:96], files[-1])
    return files


def member_probs(ckpt: Path, files: list[Path]) -> np.ndarray:
    """One member's probabilities in float64, straight from its network (no sliding window): the reference."""
    from leanseg.checkpoint import load_model
    from leanseg.io import read_nifti

    net, _ = load_model(ckpt)
    array, _ = read_nifti(files)
    with torch.no_grad():
        return torch.sigmoid(net.double()(torch.from_numpy(array).double()[None]))[0].numpy()


@needs_data
def test_ensemble_averages_probabilities_and_maps_their_spread(tmp_path, crop, capsys):
    a, b = checkpoint(tmp_path / "a.safetensors", 0), checkpoint(tmp_path / "b.safetensors", 1)
    code = main(["predict", *map(str, crop), "-m", str(a), "-m", str(b), "-o", str(tmp_path / "seg.nii.gz"),
                 "--probabilities", "--uncertainty", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    members = np.stack([member_probs(a, crop), member_probs(b, crop)])  # (2, K, X, Y, Z), RAS order
    probs = nib.load(tmp_path / "seg_probs.nii.gz")
    spread = nib.load(tmp_path / "seg_uncertainty.nii.gz")
    reference = nib.load(crop[0])
    for img in (probs, spread):
        np.testing.assert_array_equal(img.affine, reference.affine)
    assert spread.shape == reference.shape and spread.get_data_dtype() == np.float32
    # the files are on the input's (LPS) grid; the references are in RAS: flip the first two axes back
    to_disk = (slice(None, None, -1), slice(None, None, -1))
    np.testing.assert_allclose(np.moveaxis(np.asanyarray(probs.dataobj), -1, 0),
                               members.mean(0)[(slice(None), *to_disk)], atol=1e-5)
    np.testing.assert_allclose(np.asanyarray(spread.dataobj), members.std(0).mean(0)[to_disk], atol=1e-5)
    assert np.asanyarray(spread.dataobj).max() > 0.01  # two different random networks do disagree


@needs_data
def test_uncertainty_over_mirrorings_of_one_model(tmp_path, crop):
    a = checkpoint(tmp_path / "a.safetensors", 0)
    predict(crop, a, output=tmp_path / "seg.nii.gz", tta=True, uncertainty=True, progress=False)
    spread = np.asanyarray(nib.load(tmp_path / "seg_uncertainty.nii.gz").dataobj)
    assert spread.shape == (40, 44, 36) and np.isfinite(spread).all() and spread.max() > 0


@needs_data
def test_predict_postprocess_overrides_the_checkpoint(tmp_path, crop):
    rules = {"largest": ["WT"], "min_size": {"ET": 20}}
    a = checkpoint(tmp_path / "a.safetensors", 0, postprocess=rules)
    raw = predict(crop, a, output=tmp_path / "raw.nii.gz", postprocess="none", progress=False)
    done = predict(crop, a, output=tmp_path / "pp.nii.gz", progress=False)  # the checkpoint's rules
    labels = LabelManager(regions=REGIONS)
    raw_map = np.asanyarray(nib.load(raw).dataobj)
    expected = Postprocess.parse(rules, labels).apply(raw_map, labels)
    assert not np.array_equal(expected, raw_map)
    np.testing.assert_array_equal(np.asanyarray(nib.load(done).dataobj), expected)


@needs_data
@pytest.mark.parametrize("case, message", [
    ("channels", "t1.safetensors: channels ('flair', 't1') differs from"),
    ("regions", "regions {'WT': (1, 2, 3, 4), 'TC': (1, 3, 4)} differs"),
    ("one", "--uncertainty needs several models"),
    ("postprocess", "--postprocess: 'largest' names 'XT'"),
])
def test_bad_ensembles_are_one_line(tmp_path, crop, capsys, case, message):
    a = checkpoint(tmp_path / "a.safetensors", 0)
    args = ["predict", *map(str, crop), "-m", str(a), "-o", str(tmp_path / "s.nii.gz"), "--no-progress"]
    if case == "channels":
        args += ["-m", str(checkpoint(tmp_path / "t1.safetensors", 1, channels=("flair", "t1")))]
    elif case == "regions":
        other = tmp_path / "r.safetensors"
        kwargs = {"spatial_dims": 3, "in_channels": 2, "out_channels": 2}
        save_model(TinyEnsembleNet(**kwargs), other, model="tiny_ensemble_net", model_kwargs=kwargs,
                   channels=["flair", "t1c"], regions={"WT": [1, 2, 3, 4], "TC": [1, 3, 4]}, normalization="none")
        args += ["-m", str(other)]
    elif case == "one":
        args += ["--uncertainty"]
    else:
        args += ["--postprocess", '{"largest": ["XT"]}']
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "s.nii.gz").exists()
