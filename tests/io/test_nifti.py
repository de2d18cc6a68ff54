"""NIfTI round trips on every real file in ../shared/data/nifti, canonical reorientation, case folders."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from leanseg.errors import LeanSegError
from leanseg.io import find_case_files, read_nifti, read_volume, write_nifti

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "nifti"
FILES = sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*.nii*")) if DATA.is_dir() else []
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} (shared test data) is absent")


def _assert_same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image):
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.affine, b.affine)
    for form in ("qform", "sform"):
        (ma, ca), (mb, cb) = a.header.get_qform(coded=True), b.header.get_qform(coded=True)
        if form == "sform":
            (ma, ca), (mb, cb) = a.header.get_sform(coded=True), b.header.get_sform(coded=True)
        assert int(ca) == int(cb), form
        if ma is not None:
            np.testing.assert_allclose(ma, mb, atol=1e-5)
    np.testing.assert_allclose(a.header.get_zooms(), b.header.get_zooms())


@needs_data
@pytest.mark.parametrize("name", FILES)
def test_round_trip_keeps_grid_and_values(name, tmp_path):
    src = DATA / name
    array, geometry = read_nifti(src)
    assert array.dtype == np.float32 and array.shape[0] == 1
    out = write_nifti(tmp_path / ("out.nii" if name.endswith(".nii") else "out.nii.gz"), array[0], geometry)
    a, b = nib.load(src), nib.load(out)
    _assert_same_grid(a, b)
    np.testing.assert_allclose(b.get_fdata(), a.get_fdata(), rtol=1e-6, atol=1e-6)


@needs_data
def test_canonical_order_is_ras():
    array, geometry = read_nifti(DATA / "monai_tiny/anatomical.nii")  # LAS, big-endian int16
    raw = np.asanyarray(nib.load(DATA / "monai_tiny/anatomical.nii").dataobj).astype(np.float32)
    np.testing.assert_array_equal(array[0], raw[::-1])  # L -> R flips the first axis only
    assert nib.aff2axcodes(geometry.affine) == ("L", "A", "S")
    assert geometry.spacing == (2.0, 2.0, 2.0)


@needs_data
def test_label_map_written_as_integers(tmp_path):
    array, geometry = read_nifti(DATA / "brats2015_deepmedic/brats_2013_pat0006_1/OTMultiClass.nii.gz")  # float32
    out = write_nifti(tmp_path / "seg.nii.gz", array[0].astype(np.uint8), geometry)
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    assert set(np.unique(np.asanyarray(img.dataobj))) == {0, 1, 2, 3, 4}


def test_lps_and_oblique_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    affine = np.array([[0, -2.0, 0, 10], [0, 0, 3.0, -4], [-1.5, 0, 0, 7], [0, 0, 0, 1]])  # permuted + flipped
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 4)
    nib.save(img, tmp_path / "in.nii.gz")
    array, geometry = read_nifti(tmp_path / "in.nii.gz")
    assert array.shape == (1, 6, 7, 5)  # voxel axes run S-I, L-R, A-P: RAS order is (1, 2, 0)
    write_nifti(tmp_path / "out.nii.gz", array[0], geometry)
    back = nib.load(tmp_path / "out.nii.gz")
    _assert_same_grid(img, back)
    np.testing.assert_array_equal(back.get_fdata(), data)


def test_4d_channels_last_and_probabilities(tmp_path):
    data = np.arange(4 * 5 * 6 * 2, dtype=np.int16).reshape(4, 5, 6, 2)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "in.nii.gz")
    array, geometry = read_nifti(tmp_path / "in.nii.gz")
    assert array.shape == (2, 4, 5, 6)
    write_nifti(tmp_path / "p.nii.gz", array, geometry)
    np.testing.assert_array_equal(nib.load(tmp_path / "p.nii.gz").get_fdata(), data)


def test_scale_slope_applied(tmp_path):
    img = nib.Nifti1Image(np.full((3, 3, 3), 7, dtype=np.int32), np.eye(4))
    img.header.set_slope_inter(0.5, 1.0)
    nib.save(img, tmp_path / "s.nii.gz")
    np.testing.assert_allclose(read_nifti(tmp_path / "s.nii.gz")[0], 4.5)


def test_several_files_must_share_grid(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 5), np.float32), np.eye(4)), tmp_path / "b.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.diag([2, 1, 1, 1])), tmp_path / "c.nii.gz")
    assert read_nifti([tmp_path / "a.nii.gz", tmp_path / "a.nii.gz"])[0].shape == (2, 4, 4, 4)
    with pytest.raises(LeanSegError, match="b.nii.gz: shape"):
        read_nifti([tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"])
    with pytest.raises(LeanSegError, match="c.nii.gz: affine"):
        read_nifti([tmp_path / "a.nii.gz", tmp_path / "c.nii.gz"])


@pytest.mark.parametrize(
    "names, channels",
    [
        (
            [
                "BraTS20_Training_001_t1.nii.gz",
                "BraTS20_Training_001_t1ce.nii.gz",
                "BraTS20_Training_001_t2.nii.gz",
                "BraTS20_Training_001_flair.nii.gz",
                "BraTS20_Training_001_seg.nii.gz",
            ],
            ["t1", "t1c", "t2", "flair"],
        ),  # 2020
        (
            [
                "BraTS-GLI-00000-000-t1n.nii.gz",
                "BraTS-GLI-00000-000-t1c.nii.gz",
                "BraTS-GLI-00000-000-t2w.nii.gz",
                "BraTS-GLI-00000-000-t2f.nii.gz",
                "BraTS-GLI-00000-000-seg.nii.gz",
            ],
            ["t1", "t1c", "t2", "flair"],
        ),  # 2023
        (
            ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz", "OTMultiClass.nii.gz"],
            ["flair", "t1c"],
        ),  # 2015
    ],
)
def test_case_folder_discovery(tmp_path, names, channels):
    for name in names:
        (tmp_path / name).touch()
    found = find_case_files(tmp_path, channels)
    assert [p.name for p in found] == names[: len(channels)]


def test_case_folder_custom_alias_and_ambiguity(tmp_path):
    for name in ("case_adc.nii.gz", "case_dwi.nii.gz"):
        (tmp_path / name).touch()
    assert find_case_files(tmp_path, ["diffusion"], aliases={"diffusion": ["dwi"]})[0].name == "case_dwi.nii.gz"
    with pytest.raises(LeanSegError, match="no file for channel 'flair'"):
        find_case_files(tmp_path, ["flair"])
    (tmp_path / "case_t1ce.nii.gz").touch()
    (tmp_path / "case_t1c.nii.gz").touch()
    with pytest.raises(LeanSegError, match="2 files"):
        find_case_files(tmp_path, ["t1c"])


@needs_data
def test_brats2015_case_folder_reads_two_channels():
    array, geometry = read_volume(DATA / "brats2015_deepmedic/brats_2013_pat0001_1", channels=["flair", "t1c"])
    assert array.shape == (2, 240, 240, 155)
    assert nib.aff2axcodes(geometry.affine) == ("L", "P", "S")
