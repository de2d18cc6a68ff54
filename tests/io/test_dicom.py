"""DICOM series in: series written slice by slice (pydicom) from shared NIfTI cases come back voxel for voxel with
the same affine, predict from one series folder per modality equals predict from the NIfTI files, and broken
series give one line."""

import os
import uuid
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from leanseg import save_model
from leanseg.cli.main import main
from leanseg.io import read_nifti, read_volume
from leanseg.models import _registry
from leanseg.nn import LeanConv

pydicom = pytest.importorskip("pydicom", reason="pydicom is not installed (pip install 'leanseg[dicom]')")

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CT = DATA / "nifti/totalsegmentator_example/example_ct_sm.nii.gz"
BRATS = DATA / "nifti/brats2015_deepmedic/brats_2013_pat0006_1/T1c_subtrMeanDivStd.nii.gz"
TCGA = DATA / "nifti/brats_toolkit_TCGA-DU-7294"


def needs(path: Path):
    if not path.exists():
        pytest.skip(f"{path} (shared data) is absent")


def write_series(img: nib.Nifti1Image, folder: Path, slope: float = 1.0, intercept: float = 0.0) -> Path:
    """One DICOM file per slice of ``img`` (its voxel k-th slices), geometry from its affine. Stored values are
    (value - intercept) / slope as int16; files are named in a shuffled order so the reader must sort them."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    data = np.asanyarray(img.dataobj).astype(np.float64)
    lps = np.diag([-1.0, -1.0, 1.0]) @ img.affine[:3]  # NIfTI's RAS+ to DICOM's LPS
    col_step, row_step = np.linalg.norm(lps[:, 0]), np.linalg.norm(lps[:, 1])
    iop = [*(lps[:, 0] / col_step), *(lps[:, 1] / row_step)]
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    order = np.random.default_rng(0).permutation(data.shape[2])
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = study, series, "MR", k + 1
        # the patient and study modules a scanner writes (DICOM SEG copies them)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "LEANSEG01", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.SeriesNumber, ds.FrameOfReferenceUID = "", 1, frame
        ds.ImagePositionPatient = [float(v) for v in lps @ [0, 0, k, 1]]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = [float(row_step), float(col_step)]
        ds.SliceThickness = float(np.linalg.norm(lps[:, 2]))
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = np.rint((data[:, :, k].T - intercept) / slope)  # (rows, columns) = (j, i)
        ds.PixelData = stored.astype("<i2").tobytes()
        ds.save_as(folder / f"IM{order[k]:04d}-{uuid.uuid4().hex[:6]}", enforce_file_format=True)
    return folder


def oblique(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """The same voxels on a grid rotated 20 degrees about two axes (DICOM's direction cosines in full)."""
    a, b = np.radians(20), np.radians(-35)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = img.affine.copy()
    affine[:3, :3] = rz @ rx @ affine[:3, :3]
    return nib.Nifti1Image(np.asanyarray(img.dataobj), affine)


@pytest.mark.parametrize("source, transform, rescale", [
    (CT, None, (1.0, -1024.0)),                   # real CT in HU, RAS, 3 mm; stored with an intercept
    (CT, oblique, (1.0, 0.0)),                    # the same voxels on an oblique grid
    (BRATS, "crop", (0.001, 0.0)),                # BraTS 2015 (LPS, float z-scores): slope 0.001
])
def test_series_round_trip_voxel_for_voxel(tmp_path, source, transform, rescale):
    needs(source)
    img = nib.load(source)
    if transform == "crop":
        img = img.slicer[60:180, 50:200, 70:90]
    elif transform is not None:
        img = transform(img)
    nib.save(img, tmp_path / "source.nii.gz")
    folder = write_series(img, tmp_path / "series", *rescale)
    got, geometry = read_volume(folder)
    expected, reference = read_nifti(tmp_path / "source.nii.gz")
    assert got.shape == expected.shape
    np.testing.assert_allclose(geometry.affine, reference.affine, atol=1e-4)
    if rescale[0] == 1.0:
        np.testing.assert_array_equal(got, expected)
    else:  # stored as integers of the slope: back within half a step
        np.testing.assert_allclose(got, expected, atol=rescale[0] / 2 + 1e-6)


class TinyDicomNet(nn.Module):
    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = LeanConv(spatial_dims, in_channels, out_channels, bias=True)

    def forward(self, x):
        return self.conv(x)


def ct_checkpoint(tmp_path: Path, monkeypatch) -> Path:
    """A tiny 1-channel body/background checkpoint for series cut from the shared CT (skips without it)."""
    needs(CT)
    monkeypatch.setitem(_registry._MODELS, "tiny_dicom_net", TinyDicomNet)
    kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    return save_model(TinyDicomNet(**kwargs), tmp_path / "m.safetensors", model="tiny_dicom_net",
                      model_kwargs=kwargs, labels={"background": 0, "body": 1})


def tcga_inputs(tmp_path: Path, monkeypatch) -> tuple[Path, list[Path], list[Path]]:
    """A tiny 4-channel BraTS-region checkpoint, and the shared TCGA case cropped to 24 slices as NIfTI files and
    as one DICOM series per modality: ``(checkpoint, files, folders)``."""
    needs(TCGA)
    monkeypatch.setitem(_registry._MODELS, "tiny_dicom_net", TinyDicomNet)
    names = ("t1", "t1c", "t2", "fla")
    kwargs = {"spatial_dims": 3, "in_channels": 4, "out_channels": 3}
    torch.manual_seed(0)
    ckpt = save_model(TinyDicomNet(**kwargs), tmp_path / "m.safetensors", model="tiny_dicom_net",
                      model_kwargs=kwargs, channels=["t1", "t1c", "t2", "flair"], window=[64, 64, 32],
                      regions={"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}, normalization={"kind": "zscore"})
    files, folders = [], []
    for name in names:
        img = nib.load(TCGA / f"TCGA-DU-7294_{name}_bet.nii.gz").slicer[40:200, 30:210, 60:84]  # 24 slices
        files.append(tmp_path / f"{name}.nii.gz")
        nib.save(img, files[-1])
        folders.append(write_series(img, tmp_path / f"dicom_{name}"))
    return ckpt, files, folders


def test_predict_from_one_series_per_modality_equals_nifti(tmp_path, capsys, monkeypatch):
    ckpt, files, folders = tcga_inputs(tmp_path, monkeypatch)
    assert main(["predict", *map(str, files), "-m", str(ckpt), "-o", str(tmp_path / "nifti_seg.nii.gz"),
                 "--no-progress"]) == 0
    assert main(["predict", *map(str, folders), "-m", str(ckpt), "--no-progress"]) == 0
    out = tmp_path / "dicom_t1_pred.nii.gz"  # the default: beside the first folder, as NIfTI
    a, b = nib.load(tmp_path / "nifti_seg.nii.gz"), nib.load(out)
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(b.dataobj), np.asanyarray(a.dataobj))
    assert len(np.unique(np.asanyarray(a.dataobj))) > 1  # the comparison is not between two empty maps


def test_dicom_seg_output_equals_the_nifti_output(tmp_path, capsys, monkeypatch):
    """-o seg.dcm from DICOM series: a DICOM SEG (highdicom) referencing the first series, one segment per region,
    whose masks on each source slice are those of the NIfTI output of the same case, voxel for voxel."""
    hd = pytest.importorskip("highdicom", reason="highdicom is not installed (pip install 'leanseg[dicom]')")
    ckpt, files, folders = tcga_inputs(tmp_path, monkeypatch)
    assert main(["predict", *map(str, files), "-m", str(ckpt), "-o", str(tmp_path / "nifti_seg.nii.gz"),
                 "--no-progress"]) == 0
    assert main(["predict", *map(str, folders), "-m", str(ckpt), "-o", str(tmp_path / "seg.dcm"),
                 "--no-progress", "--probabilities"]) == 0
    assert (tmp_path / "seg_probs.nii.gz").exists()  # arrays beside a SEG are NIfTI
    labels = np.asanyarray(nib.load(tmp_path / "nifti_seg.nii.gz").dataobj)  # (i, j, k) as the series was written
    regions = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    masks = np.stack([np.isin(labels, v) for v in regions.values()], -1)  # (i, j, k, 3)
    assert 0 < masks[..., 0].sum() < masks[..., 0].size  # neither empty nor full

    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert ds.Modality == "SEG" and [s.SegmentLabel for s in ds.SegmentSequence] == list(regions)
    source = [pydicom.dcmread(p) for p in folders[0].iterdir()]
    source.sort(key=lambda d: float(d.ImagePositionPatient[2]))  # axis-aligned: slice k at the k-th height
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    pixels = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in source], segment_numbers=[1, 2, 3],
                                               assert_missing_frames_are_empty=True)  # (k, rows j, columns i, 3)
    np.testing.assert_array_equal(pixels.transpose(2, 1, 0, 3).astype(bool), masks)


def test_dicom_seg_needs_a_dicom_input(tmp_path, capsys, monkeypatch):
    ckpt, files, _ = tcga_inputs(tmp_path, monkeypatch)
    assert main(["predict", *map(str, files), "-m", str(ckpt), "-o", str(tmp_path / "seg.dcm"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seg.dcm: DICOM SEG output references a DICOM series" in err, err
    assert not (tmp_path / "seg.dcm").exists()


def test_broken_series_are_one_line(tmp_path, capsys, monkeypatch):
    ckpt = ct_checkpoint(tmp_path, monkeypatch)
    img = nib.load(CT).slicer[:, :, :6]
    folder = write_series(img, tmp_path / "a")
    files = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    files[2].unlink()  # a missing slice in the middle
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in sorted(write_series(img, tmp_path / "b").iterdir())[:3] + sorted(
            write_series(img, tmp_path / "c").iterdir())[:3]:
        p.rename(mixed / p.name)
    for path, message in ((folder, "a: slices are not evenly spaced"), (mixed, "mixed: holds 2 DICOM series")):
        assert main(["predict", str(path), "-m", str(ckpt), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def _tamper(folder: Path, **fields) -> None:
    """Set header fields of every slice of a series in place."""
    for p in folder.iterdir():
        ds = pydicom.dcmread(p)
        for name, value in fields.items():
            setattr(ds, name, value)
        ds.save_as(p, enforce_file_format=True)


@pytest.mark.parametrize("fields, message", [
    ({"PixelSpacing": [0.0, 1.0]}, "PixelSpacing 0.0 is not a positive finite spacing"),
    ({"PixelSpacing": ["NaN", 1.0]}, "PixelSpacing nan is not a positive finite spacing"),
    ({"PixelSpacing": [-1.0, 1.0]}, "PixelSpacing -1.0 is not a positive finite spacing"),  # would mirror
    ({"RescaleSlope": "NaN"}, "RescaleSlope nan / RescaleIntercept 0.0 is not finite"),
    ({"RescaleIntercept": "Inf"}, "is not finite"),
    ({"Rows": 65535, "Columns": 65535}, "over the limit"),  # refused before anything is allocated
])
def test_hostile_series_headers_are_one_line(tmp_path, capsys, monkeypatch, fields, message):
    """A NaN, zero or negative spacing or rescale in a DICOM header never becomes a silent background map."""
    ckpt = ct_checkpoint(tmp_path, monkeypatch)
    folder = write_series(nib.load(CT).slicer[:, :, :4], tmp_path / "s")
    with warnings.catch_warnings():  # pydicom warns of the invalid values it is asked to write
        warnings.simplefilter("ignore")
        _tamper(folder, **fields)
    assert main(["predict", str(folder), "-m", str(ckpt), "-o", str(tmp_path / "p.nii.gz"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "p.nii.gz").exists()


def test_nothing_is_written_into_an_input_series(tmp_path, capsys, monkeypatch):
    """A DICOM SEG (or any output) named inside the input series folder is refused: it would replace a slice or
    join the series; the folder is unchanged."""
    ckpt = ct_checkpoint(tmp_path, monkeypatch)
    folder = write_series(nib.load(CT).slicer[:, :, :4], tmp_path / "s")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    link = tmp_path / "link"
    link.symlink_to(folder)
    slice_as_seg = folder / sorted(before)[0]
    slice_as_seg.rename(slice_as_seg.with_suffix(".dcm"))  # a source slice named as a SEG output would be
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for out in (slice_as_seg.with_suffix(".dcm"), folder / "seg.dcm", folder / "pred.nii.gz", link / "seg.dcm"):
        assert main(["predict", str(folder), "-m", str(ckpt), "-o", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is inside the input folder" in err, err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
