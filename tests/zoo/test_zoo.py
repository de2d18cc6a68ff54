"""The model zoo (leanseg.zoo): zoo names wherever a checkpoint path goes, the listing, and the model `leanseg
predict` picks when none is given. Tiny checkpoints in a temporary zoo folder; the shipped models have their own
test (test_pretrained.py)."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import segyio

import leanseg
from leanseg import pretrained, zoo
from leanseg.cli.main import main
from leanseg.errors import LeanSegError
from leanseg.models import create

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SMALL_SEGY = DATA / "segy/segyio/small.sgy"  # 5 x 5 x 50
needs_data = pytest.mark.skipif(not SMALL_SEGY.is_file(), reason="shared test data absent")


def tiny_checkpoint(path: Path, channels=("amplitude",), spatial_dims=3, task="faults") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    model = create("lean_unet", spatial_dims=spatial_dims, in_channels=len(channels), out_channels=1,
                   features=(4, 8))
    return leanseg.save_model(model, path, task=task, channels=list(channels), regions={"fault": [1]},
                              normalization="zscore", window=[16] * spatial_dims)


@pytest.fixture
def zoo_dir(tmp_path, monkeypatch):
    """A zoo holding a tiny 'faults' model and its card; the working folder is empty (no runs/leanseg)."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    tiny_checkpoint(folder / "faults.safetensors")
    (folder / "faults.md").write_text("# faults\n\nA tiny test fault model.\n\n## Scores\n")
    monkeypatch.setattr(zoo, "ZOO_DIR", folder)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return folder


def test_listing(zoo_dir, capsys):
    assert zoo.names() == ["faults"]
    (row,) = pretrained.describe()
    assert (row.name, row.task, row.summary) == ("faults", "faults", "A tiny test fault model")
    assert row.input == "3D, 1 channel (amplitude)" and row.weights > 0
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "faults" in out and "A tiny test fault model" in out and "kB" in out


def test_zoo_name_loads_and_a_file_wins(zoo_dir):
    model, meta = leanseg.load_model("faults")
    assert meta.task == "faults" and list(model.config["features"]) == [4, 8]
    tiny_checkpoint(Path("faults"), channels=("a", "b"))  # a file in the working folder named like the zoo model
    _, meta = leanseg.load_model("faults")
    assert list(meta.channels) == ["a", "b"]


def test_unknown_name_says_did_you_mean(zoo_dir, capsys):
    with pytest.raises(LeanSegError, match="did you mean faults.*zoo: faults"):
        leanseg.load_model("fault")
    with pytest.raises(LeanSegError, match="checkpoint not found"):
        leanseg.load_model("runs/x/best.safetensors")  # clearly a path: no zoo hint
    assert main(["evaluate", "a.nii.gz", "b.nii.gz", "-m", "fautls"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "did you mean faults" in err


@needs_data
def test_predict_segy_with_a_zoo_name_and_with_no_model(zoo_dir, capsys):
    out = leanseg.predict(SMALL_SEGY, model="faults", output="a.sgy", progress=False)
    assert main(["predict", str(SMALL_SEGY), "-o", "b.sgy", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zoo model 'faults'" in err
    with segyio.open(SMALL_SEGY) as src, segyio.open(out) as a, segyio.open("b.sgy") as b:
        assert list(a.ilines) == list(src.ilines) == list(b.ilines)
        assert list(a.xlines) == list(src.xlines) and len(a.samples) == len(src.samples)
        assert np.array_equal(segyio.tools.cube(a), segyio.tools.cube(b))


def nifti(path: Path, channels: int = 1) -> Path:
    shape = (12, 12, 12) + ((channels,) if channels > 1 else ())
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(shape, dtype=np.float32), np.eye(4)), path)
    return path


def test_no_model_uses_the_last_trained_one_when_its_channels_fit(zoo_dir, capsys):
    trained = tiny_checkpoint(Path("runs/leanseg/best.safetensors").resolve(), channels=("flair", "t1c"),
                              task="brats")
    assert pretrained.default_model([nifti(Path("two.nii.gz"), channels=2)])[0] == Path("runs/leanseg/best.safetensors")
    assert main(["predict", "two.nii.gz", "-o", "seg.nii.gz", "--no-progress"]) == 0
    assert "runs/leanseg/best.safetensors" in capsys.readouterr().err and Path("seg.nii.gz").is_file()
    # a case folder whose files carry the checkpoint's channel names fits too
    case = Path("case")
    case.mkdir()
    nifti(case / "case_flair.nii.gz"), nifti(case / "case_t1c.nii.gz")
    assert pretrained.default_model([case])[0] == Path("runs/leanseg/best.safetensors")
    assert trained.is_file()


def test_brain_mri_with_neither_gets_one_line_and_exit_2(zoo_dir, capsys):
    tiny_checkpoint(Path("runs/leanseg/best.safetensors").resolve(), channels=("flair", "t1c"), task="brats")
    nifti(Path("one.nii.gz"), channels=1)  # 1 channel: the trained 2-channel model does not fit, no zoo model
    assert main(["predict", "one.nii.gz", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "zoo: faults" in err and "leanseg train -d" in err  # a dataset folder trains a NIfTI model
    assert "takes 2 channel(s) (flair, t1c)" in err  # and why the trained model does not fit


def test_image_uses_em_membrane_only_when_it_is_installed(zoo_dir, tmp_path):
    image = Path("img.png")
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((20, 20)) * 255).astype(np.uint8)).save(image)
    with pytest.raises(LeanSegError, match="no model given"):
        pretrained.default_model([image])
    tiny_checkpoint(zoo_dir / "em-membrane.safetensors", channels=("em",), spatial_dims=2, task="seg2d")
    assert pretrained.default_model([image])[0].name == "em-membrane.safetensors"
    assert "em-membrane" in zoo.names()
