"""DICOM series in: a folder of single-slice DICOM files (one series) is read as a volume with its geometry.

We read with pydicom directly rather than through MONAI's PydicomReader or ITKReader: ITK is a large extra
install, and MONAI's readers return their own affine conventions and metadata dicts, while all leanseg needs is
the slices' pixel data and four geometry attributes, and a NIfTI-style geometry (``NiftiGeometry``) so that results
are written as NIfTI on the same grid by the code that writes every NIfTI.

Geometry (DICOM PS3.3 C.7.6.2): ImageOrientationPatient gives the row and column direction cosines r and c,
PixelSpacing the distance between rows (along c) and between columns (along r), ImagePositionPatient the centre of
each slice's first voxel, all in the patient's LPS frame. Slices are sorted along r x c; the step between them is
measured from their positions (SliceThickness is a slab width, not a spacing). The affine maps voxel (i, j, k)
(column, row, slice) to RAS+ millimetres, as NIfTI's does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from leanseg.errors import LeanSegError
from leanseg.io.nifti import NIFTI_SUFFIXES, NiftiGeometry

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_TOLERANCE = 1e-3  # mm (positions) and cosine units: scanners write positions with a few decimals


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise LeanSegError("reading DICOM needs pydicom: pip install 'leanseg[dicom]'") from None
    return pydicom


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """A folder of DICOM files (and no NIfTI files): the 'DICM' marker after the 128-byte preamble, or .dcm."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")]
    if not files or any(p.name.lower().endswith(NIFTI_SUFFIXES) for p in files):
        return False
    for p in files[:8]:
        if p.suffix.lower() == ".dcm":
            return True
        with p.open("rb") as f:
            if f.read(132)[128:] == b"DICM":
                return True
    return False


def _slices(folder: Path) -> list:
    pydicom = _pydicom()
    found = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(p)
        except Exception:  # InvalidDicomError, truncated files: not slices of this series (DICOMDIR, notes...)
            continue
        if "PixelData" in ds:
            found.append((p, ds))
    if not found:
        raise LeanSegError(f"{folder}: no DICOM image files")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in found}
    if len(series) > 1:
        raise LeanSegError(f"{folder}: holds {len(series)} DICOM series; give one folder per series")
    for name in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        missing = [p.name for p, ds in found if name not in ds]
        if missing:
            raise LeanSegError(f"{folder}/{missing[0]}: no {name}, so its geometry is unknown")
    return found


def read_dicom_series(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One series: ``(data (X, Y, Z) float32 as stored, column/row/slice order; affine 4x4 to RAS+ mm)``."""
    folder = Path(folder)
    found = _slices(folder)
    first = found[0][1]
    iop = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    r, c = iop[:3], iop[3:]
    normal = np.cross(r, c)
    if abs(np.linalg.norm(normal) - 1) > 1e-2:
        raise LeanSegError(f"{folder}: ImageOrientationPatient {iop.tolist()} is not two orthonormal directions")
    for p, ds in found:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=np.float64), iop, atol=_TOLERANCE):
            raise LeanSegError(f"{folder}/{p.name}: its orientation differs from the other slices' (a localiser "
                               "or a second stack?); give one stack per folder")
        if (int(ds.Rows), int(ds.Columns)) != (int(first.Rows), int(first.Columns)):
            raise LeanSegError(f"{folder}/{p.name}: {ds.Rows}x{ds.Columns} pixels, the first slice has "
                               f"{first.Rows}x{first.Columns}")
    found.sort(key=lambda item: float(np.dot(np.asarray(item[1].ImagePositionPatient, dtype=np.float64), normal)))
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for _, ds in found])
    if len(found) > 1:
        steps = np.diff(positions, axis=0)
        step = (positions[-1] - positions[0]) / (len(found) - 1)
        if np.linalg.norm(step) < _TOLERANCE:
            raise LeanSegError(f"{folder}: several slices at one position (two series in one folder?)")
        if np.abs(steps - step).max() > max(_TOLERANCE, 0.01 * np.linalg.norm(step)):
            raise LeanSegError(f"{folder}: slices are not evenly spaced (missing slices?); spacings "
                               f"{sorted(set(np.round(np.linalg.norm(steps, axis=1), 3).tolist()))[:5]} mm")
    else:
        step = normal * float(first.get("SliceThickness", 1.0) or 1.0)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = r * col_spacing  # i: along a row, column to column
    lps[:3, 1] = c * row_spacing  # j: down a column, row to row
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = np.eye(4)
    affine[:3] = _LPS_TO_RAS @ lps[:3]
    data = np.empty((int(first.Columns), int(first.Rows), len(found)), dtype=np.float32)
    for k, (p, ds) in enumerate(found):
        try:
            pixels = ds.pixel_array
        except Exception as err:  # compressed without a decoder, truncated pixel data
            raise LeanSegError(f"{folder}/{p.name}: cannot decode its pixels ({type(err).__name__}: {err})") from None
        if pixels.ndim != 2:
            raise LeanSegError(f"{folder}/{p.name}: pixel data of shape {pixels.shape}; expected one grey slice")
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        data[:, :, k] = (pixels.astype(np.float64) * slope + intercept).T  # (rows, cols) -> (i, j)
    return data, affine


def read_dicom(folders: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[np.ndarray, NiftiGeometry]:
    """One DICOM series folder per channel -> ``(array (C, X, Y, Z) float32 in RAS+ order, geometry)``, as
    ``read_nifti`` returns them, so results are written as NIfTI on the series' grid."""
    from leanseg import env

    paths = [Path(folders)] if isinstance(folders, str | os.PathLike) else [Path(f) for f in folders]
    channels, geometry = [], None
    for folder in paths:
        data, affine = read_dicom_series(folder)
        if geometry is None:
            img = nib.Nifti1Image(data, affine)
            img.set_qform(affine, code=1)  # scanner coordinates
            img.set_sform(affine, code=1)
            ornt = nib.orientations.io_orientation(affine)
            geometry = NiftiGeometry(img.header.copy(), data.shape, ornt, folder)
        elif data.shape != geometry.shape or not np.allclose(affine, geometry.affine, atol=1e-4):
            raise LeanSegError(f"{folder}: its grid ({'x'.join(map(str, data.shape))}) differs from "
                               f"{geometry.path.name}'s; resample the series to one grid first")
        if data.size * len(paths) > env.max_voxels():
            raise LeanSegError(f"{folder}: {data.size * len(paths):,} voxels, over the limit of "
                               f"{env.max_voxels():,} (LEANSEG_MAX_VOXELS raises it)")
        channels.append(geometry.to_canonical(data))
    assert geometry is not None  # at least one folder
    return np.ascontiguousarray(np.stack(channels)), geometry


__all__ = ["is_dicom_folder", "read_dicom", "read_dicom_series"]
