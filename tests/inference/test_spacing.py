"""Spacing: resampling against scipy in float64, the checkpoint field, predict on a real anisotropic volume (made
from a shared BraTS case) against the prediction on the isotropic original, training's resampling, and one-line
errors for bad --spacing."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leanseg import save_model
from leanseg.checkpoint import CheckpointMeta, read_meta
from leanseg.cli.main import main
from leanseg.errors import LeanSegError
from leanseg.models import _registry
from leanseg.spacing import parse_spacing, resample, resample_labels, target_shape

ndi = pytest.importorskip("scipy.ndimage", reason="scipy is the independent reference")

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
FLAIR = DATA / "nifti/brats2015_deepmedic/brats_2013_pat0006_1/Flair_subtrMeanDivStd.nii.gz"
TCGA = DATA / "nifti/brats_toolkit_TCGA-DU-7294"


def needs(path: Path):
    if not path.exists():
        pytest.skip(f"{path} (shared data) is absent")


def zoom_reference(x: np.ndarray, shape) -> np.ndarray:
    """scipy's linear zoom with voxel edges kept (grid_mode) and the border value repeated, per channel."""
    return np.stack([ndi.zoom(c, [n / m for n, m in zip(shape, c.shape, strict=True)], order=1, grid_mode=True,
                              mode="nearest") for c in x])


@pytest.mark.parametrize("shape, new", [
    ((7, 9, 5), (3, 4, 11)),      # odd sizes, down on two axes and up on one
    ((20, 20, 4), (20, 20, 20)),  # a 5x thick-slice axis made isotropic
    ((13, 6), (5, 17)),           # 2D
    ((1, 8, 8), (3, 8, 8)),       # a single slice repeated
])
def test_resample_equals_scipy_zoom_in_float64(shape, new):
    x = np.random.default_rng(0).normal(size=(2, *shape))
    ref = zoom_reference(x, new)
    got = resample(x, new)
    assert got.dtype == torch.float64 and tuple(got.shape) == (2, *new)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)
    # the way back lands on the input's grid, as scipy's does
    np.testing.assert_allclose(resample(got, shape).numpy(), zoom_reference(ref, shape), rtol=0, atol=1e-12)
    # float32 (what predict runs) within float32 rounding of the float64 reference
    got32 = resample(x.astype(np.float32), new)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), ref, rtol=0, atol=1e-5)


def test_resample_labels_takes_the_largest_interpolated_mask():
    rng = np.random.default_rng(1)
    label = ndi.zoom(rng.integers(0, 4, (5, 6, 4)), 3, order=0).astype(np.uint8)[:14, :17, :11]  # blobs
    new = (9, 23, 31)
    got = resample_labels(label, new)
    values = np.unique(label)
    masks = zoom_reference(np.stack([(label == v).astype(np.float64) for v in values]), new)
    ref = values[np.argmax(masks, axis=0)]
    top2 = np.sort(masks, axis=0)[-2:]
    decided = top2[1] - top2[0] > 1e-5  # float32 may break exact float64 ties the other way
    assert got.dtype == label.dtype and got.shape == new
    np.testing.assert_array_equal(got[decided], ref[decided])
    assert decided.mean() > 0.9


def test_parse_spacing_and_errors():
    assert parse_spacing("1,1,5") == (1.0, 1.0, 5.0)
    assert parse_spacing("0.9x0.9x5") == (0.9, 0.9, 5.0)
    assert parse_spacing("1", 3) == (1.0, 1.0, 1.0)
    assert parse_spacing((1, 2)) == (1.0, 2.0)
    assert parse_spacing("none") is None and parse_spacing(None) is None
    assert target_shape((240, 240, 31), (1.0, 1.0, 5.0), (1.0, 1.0, 1.0)) == (240, 240, 155)
    for bad in ("abc", "0,1,1", "1,-1,1", "nan", "1,inf,1", (True, 1, 1), ""):
        with pytest.raises(LeanSegError, match="spacing"):
            parse_spacing(bad)
    with pytest.raises(LeanSegError, match="needs 1 or 3 sizes"):
        parse_spacing("1,1", 3)


def test_checkpoint_meta_records_spacing_and_old_checkpoints_have_none():
    base = {"model": "lean_unet", "model_kwargs": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}}
    assert CheckpointMeta.from_json(base).spacing is None
    meta = CheckpointMeta.from_json(base | {"spacing": [1, 1, 2.5]})
    assert meta.spacing == (1.0, 1.0, 2.5)
    assert CheckpointMeta.from_json(json.loads(json.dumps(meta.to_json()))).spacing == (1.0, 1.0, 2.5)
    assert "spacing" not in CheckpointMeta.from_json(base).to_json()
    for bad, message in (([1, 1], "does not fit a 3D model"), ([0, 1, 1], "positive"), ("x", "voxel sizes")):
        with pytest.raises(LeanSegError, match=message):
            CheckpointMeta.from_json(base | {"spacing": bad}, source="m.safetensors")


class BoxThresholdNet(nn.Module):
    """Fixed weights whose output depends on millimetres: a 9-voxel box mean, then 'above 1' (the bright FLAIR of
    oedema in a z-scored case). At 5 mm slices the box spans 45 mm along z, so predicting there without resampling
    differs from predicting at 1 mm."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(6.0))

    def forward(self, x):  # (N, 1, D, H, W) -> (N, 2, D, H, W)
        box = x
        for kernel in ((9, 1, 1), (1, 9, 1), (1, 1, 9)):  # separable: 27 reads a voxel instead of 729
            box = F.avg_pool3d(box, kernel, stride=1, padding=tuple(k // 2 for k in kernel), count_include_pad=False)
        return torch.cat([torch.zeros_like(box), self.gain * (box - 1.0)], 1)


@pytest.fixture
def box_net(tmp_path, monkeypatch):
    monkeypatch.setitem(_registry._MODELS, "box_threshold_net", BoxThresholdNet)
    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    return save_model(BoxThresholdNet(**kwargs), tmp_path / "iso.safetensors", model="box_threshold_net",
                      model_kwargs=kwargs, labels={"background": 0, "bright": 1}, window=[128, 128, 64],
                      spacing=[1.0, 1.0, 1.0])


def degrade(data: np.ndarray, affine: np.ndarray, inplane: float = 0.9, thick: int = 5):
    """A thick-slice scan of the same field of view: means of ``thick`` slices along the third axis, and
    ``inplane`` mm voxels in the first two (scipy's linear zoom, voxel edges kept). ``data`` (X, Y, Z, ...) at
    1 mm; returns the new data and its affine."""
    x, y, z = data.shape[:3]
    out = data[:, :, : z // thick * thick].reshape(x, y, z // thick, thick, *data.shape[3:]).mean(3)
    new = (round(x / inplane), round(y / inplane))
    factors = [n / m for n, m in zip(new, (x, y), strict=True)] + [1.0] * (out.ndim - 2)
    out = ndi.zoom(out, factors, order=1, grid_mode=True, mode="nearest")
    f = np.array([x / new[0], y / new[1], thick])  # new voxel size in old voxels
    grid = np.eye(4)
    grid[:3, :3] = np.diag(f)
    grid[:3, 3] = (f - 1) / 2  # the centre of new voxel 0 in old voxel coordinates
    return out.astype(np.float32), affine @ grid


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float(np.sum(a & b)) / max(1, int(a.sum() + b.sum()))


def test_predict_on_an_anisotropic_scan_matches_the_isotropic_prediction(tmp_path, box_net):
    needs(FLAIR)
    iso = nib.load(FLAIR).slicer[40:200, 30:210, 25:125]  # the brain: 160 x 180 x 100 at 1 mm
    nib.save(iso, tmp_path / "iso.nii.gz")
    data, affine = degrade(np.asanyarray(iso.dataobj).astype(np.float32), iso.affine)
    aniso = nib.Nifti1Image(data, affine)
    nib.save(aniso, tmp_path / "aniso.nii.gz")
    assert aniso.shape == (178, 200, 20) and np.allclose(aniso.header.get_zooms(), (160 / 178, 0.9, 5.0))

    run = ["-m", str(box_net), "--no-progress"]
    assert main(["predict", str(tmp_path / "iso.nii.gz"), *run, "-o", str(tmp_path / "iso_seg.nii.gz"),
                 "--probabilities"]) == 0
    assert main(["predict", str(tmp_path / "aniso.nii.gz"), *run, "-o", str(tmp_path / "seg.nii.gz")]) == 0
    assert main(["predict", str(tmp_path / "aniso.nii.gz"), *run, "-o", str(tmp_path / "none.nii.gz"),
                 "--spacing", "none"]) == 0
    out = nib.load(tmp_path / "seg.nii.gz")
    assert out.shape == aniso.shape  # exactly the anisotropic input's grid
    np.testing.assert_allclose(out.affine, aniso.affine, atol=1e-5)
    np.testing.assert_allclose(out.header.get_zooms(), aniso.header.get_zooms(), atol=1e-6)

    # the reference: the isotropic prediction's probabilities degraded as the scan was, then their labels
    probs = np.asanyarray(nib.load(tmp_path / "iso_seg_probs.nii.gz").dataobj)  # (X, Y, Z, K)
    ref = np.argmax(degrade(probs, iso.affine)[0], axis=-1) == 1
    got = np.asanyarray(out.dataobj) == 1
    plain = np.asanyarray(nib.load(tmp_path / "none.nii.gz").dataobj) == 1
    assert 0.005 < ref.mean() < 0.5  # a real structure, not an empty or full map
    resampled, unresampled = dice(got, ref), dice(plain, ref)
    # measured: 0.988 with resampling, 0.796 without
    assert resampled > 0.95, (resampled, unresampled)
    assert resampled > unresampled + 0.1, (resampled, unresampled)  # resampling is what makes it match


def test_checkpoint_spacing_equal_to_the_input_changes_nothing(tmp_path, box_net):
    needs(FLAIR)
    nib.save(nib.load(FLAIR).slicer[60:140, 60:160, 40:90], tmp_path / "iso.nii.gz")
    run = ["predict", str(tmp_path / "iso.nii.gz"), "-m", str(box_net), "--no-progress"]
    assert main([*run, "-o", str(tmp_path / "a.nii.gz")]) == 0
    assert main([*run, "-o", str(tmp_path / "b.nii.gz"), "--spacing", "none"]) == 0
    a, b = (np.asanyarray(nib.load(tmp_path / n).dataobj) for n in ("a.nii.gz", "b.nii.gz"))
    np.testing.assert_array_equal(a, b)


def test_bad_spacing_is_one_line(tmp_path, capsys, box_net):
    needs(FLAIR)
    nib.save(nib.load(FLAIR).slicer[60:100, 60:100, 40:60], tmp_path / "iso.nii.gz")
    cube = DATA / "segy/segyio/small.sgy"
    cases = [
        ([str(tmp_path / "iso.nii.gz"), "--spacing", "1,x,1"], "--spacing '1,x,1'"),
        ([str(tmp_path / "iso.nii.gz"), "--spacing", "0"], "positive"),
        ([str(tmp_path / "iso.nii.gz"), "--spacing", "1,1"], "needs 1 or 3 sizes"),
        ([str(tmp_path / "iso.nii.gz"), "--spacing", "0.001"], "over the limit"),
    ] + ([([str(cube), "--spacing", "1"], "small.sgy: a SEG-Y cube has no voxel size in mm")] if cube.exists() else [])
    for args, message in cases:
        out = tmp_path / ("o.sgy" if args[0].endswith(".sgy") else "o.nii.gz")
        assert main(["predict", *args, "-m", str(box_net), "-o", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_training_resamples_cases_and_records_the_median_spacing(tmp_path):
    """Two BraTS-named cases cut from the shared TCGA case, one at 1 x 1 x 2 mm and one at 1 x 1 x 3 mm: the task
    takes their median (1, 1, 2.5), loads each case resampled to it, and the checkpoint records it."""
    needs(TCGA)
    from leanseg.tasks import get_task
    from leanseg.training import TrainConfig, train

    modalities = {"t1": "t1", "t1ce": "t1c", "t2": "t2", "flair": "fla"}
    for case, thick in (("BraTS2021_00001", 2), ("BraTS2021_00002", 3)):
        folder = tmp_path / "data" / case
        folder.mkdir(parents=True)
        for ours, theirs in [*modalities.items(), ("seg", "fusion_mav")]:
            name = f"TCGA-DU-7294_{theirs}_{'seg' if ours == 'seg' else 'bet'}.nii.gz"
            img = nib.load(TCGA / name).slicer[80:128, 80:128, 96:120]  # 48 x 48 x 24 at 1 mm, tumour inside
            data = np.asanyarray(img.dataobj)[:, :, ::thick]  # every thick-th slice: labels stay labels
            affine = img.affine @ np.diag([1.0, 1.0, thick, 1.0])
            nib.save(nib.Nifti1Image(data, affine), folder / f"{case}_{ours}.nii.gz")
    task = get_task("brats")
    cases = task.discover(tmp_path / "data")
    assert task.resolve_spacing(cases) == (1.0, 1.0, 2.5)
    loaded = task.transforms(train=False).transforms[0](cases[0])  # LoadCase: before cropping to the brain
    assert loaded["image"].shape[1:] == target_shape((48, 48, 12), (1, 1, 2), (1, 1, 2.5)) == (48, 48, 10)
    assert loaded["label"].shape[1:] == (48, 48, 10)

    result = train("brats", data=tmp_path / "data", config=TrainConfig(out=tmp_path / "run", progress=False),
                   epochs=1, batch_size=1, samples_per_case=1, window=(32, 32, 8), val_fraction=0.5,
                   model_kwargs={"features": (4, 8)})
    assert result.out == tmp_path / "run"
    assert read_meta(tmp_path / "run" / "last.safetensors").spacing == (1.0, 1.0, 2.5)


def test_train_spacing_option_errors_are_one_line(tmp_path, capsys):
    for value, message in (("abc", "--spacing 'abc'"), ("1,1", "needs 1 or 3 sizes"), ("-2", "positive")):
        assert main(["train", "-t", "brats", "--synthetic", "2", "--spacing", value, "-o", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
