"""One memory budget (LEANSEG_MAX_VOXELS), checked before each stage allocates: what resampling makes of a small
file, a decoded image, a SEG-Y slab, the masks of evaluate. Each case is a tiny file that claims gigabytes."""

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from leanseg import save_model
from leanseg.cli.main import main
from leanseg.models import _registry
from leanseg.nn import LeanConv


class Tiny(nn.Module):
    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2):
        super().__init__()
        self.conv = LeanConv(spatial_dims, in_channels, out_channels, bias=True)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture()
def model(tmp_path, monkeypatch):
    def make(spatial_dims=3, **meta):
        monkeypatch.setitem(_registry._MODELS, "tiny_budget", Tiny)
        kwargs = {"spatial_dims": spatial_dims, "in_channels": 1, "out_channels": 2}
        torch.manual_seed(0)
        return save_model(Tiny(**kwargs), tmp_path / f"m{spatial_dims}.safetensors", model="tiny_budget",
                          model_kwargs=kwargs, labels={"background": 0, "fg": 1}, window=[16] * spatial_dims, **meta)
    return make


def one_line_refusal(capsys, args, message):
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "LEANSEG_MAX_VOXELS" in err, err


def test_resampling_a_coarse_file_is_checked_before_it_is_made(tmp_path, capsys, model):
    image = tmp_path / "coarse.nii.gz"  # 5 kB: 64^3 at 10 mm; a 1 mm model would make 640^3 (3.4 GB)
    nib.save(nib.Nifti1Image(np.ones((64, 64, 64), np.float32), np.diag([10.0, 10.0, 10.0, 1.0])), image)
    ckpt = model(spacing=[1.0, 1.0, 1.0])
    one_line_refusal(capsys, ["predict", image, "-m", ckpt, "-o", tmp_path / "p.nii.gz", "--no-progress"],
                     "predicting 640x640x640 voxels")
    fine = tmp_path / "fine.nii.gz"  # 64^3 at 1 mm, asked for at 0.1 mm
    nib.save(nib.Nifti1Image(np.ones((64, 64, 64), np.float32), np.eye(4)), fine)
    one_line_refusal(capsys, ["predict", fine, "-m", model(), "-o", tmp_path / "q.nii.gz", "--spacing", "0.1",
                              "--no-progress"], "predicting 640x640x640 voxels")
    assert not list(tmp_path.glob("[pq]*.nii.gz"))


def test_an_image_header_is_checked_before_decoding(tmp_path, capsys, model, monkeypatch):
    from PIL import Image

    image = tmp_path / "bomb.png"
    Image.new("L", (12000, 12000)).save(image)  # 140 kB of zeros: 144M pixels, 6 values each when predicted
    assert image.stat().st_size < 200_000
    one_line_refusal(capsys, ["predict", image, "-m", model(2), "-o", tmp_path / "p.png", "--no-progress"],
                     "predicting 12000x12000 voxels")
    monkeypatch.setenv("LEANSEG_MAX_VOXELS", str(10**8))  # below the pixels: refused before decoding
    one_line_refusal(capsys, ["predict", image, "-m", model(2), "-o", tmp_path / "p.png", "--no-progress"],
                     "its header claims 12000x12000")


def test_evaluate_with_many_labels_is_checked_before_the_masks(tmp_path, capsys):
    labels = np.arange(80 * 80 * 80).reshape(80, 80, 80) % 999  # 999 labels on a small grid: 4 GB of masks
    for name in ("a", "b"):
        nib.save(nib.Nifti1Image(labels.astype(np.int16), np.eye(4)), tmp_path / f"{name}.nii.gz")
    one_line_refusal(capsys, ["evaluate", tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"], "scoring 998 classes")


def test_a_segy_slab_is_checked_before_it_is_read(tmp_path, capsys, model, monkeypatch):
    segyio = pytest.importorskip("segyio")
    path = tmp_path / "wide.sgy"
    spec = segyio.spec()
    spec.format, spec.samples = 5, list(range(400))
    spec.ilines, spec.xlines = list(range(1, 5)), list(range(1, 301))
    with segyio.create(str(path), spec) as f:
        f.trace = [np.zeros(400, np.float32)] * (4 * 300)
        for k, (i, x) in enumerate((i, x) for i in spec.ilines for x in spec.xlines):
            f.header[k] = {segyio.su.iline: i, segyio.su.xline: x}
    monkeypatch.setenv("LEANSEG_MAX_VOXELS", str(400_000))  # a slab of 4 x 300 x 400 x 6 values is 2.9M
    one_line_refusal(capsys, ["predict", path, "-m", model(), "-o", tmp_path / "p.sgy", "--no-progress"],
                     "a slab of 4 inlines x 300 crosslines x 400 samples")
    assert not (tmp_path / "p.sgy").exists()
