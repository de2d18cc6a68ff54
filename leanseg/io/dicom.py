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
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from leanseg.errors import LeanSegError
from leanseg.io.nifti import NIFTI_SUFFIXES, NiftiGeometry

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
DICOM_SUFFIXES = (".dcm",)  # an output path with it is written as DICOM SEG
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


def _sorted_slices(folder: Path) -> tuple[list, np.ndarray]:
    """The series' ``(path, dataset)`` pairs checked to be one stack and sorted along its normal; and the normal."""
    found = _slices(folder)
    first = found[0][1]
    iop = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    r, c = iop[:3], iop[3:]
    if iop.shape != (6,) or not np.isfinite(iop).all():
        raise LeanSegError(f"{folder}/{found[0][0].name}: ImageOrientationPatient {iop.tolist()} is not six finite "
                           "numbers")
    normal = np.cross(r, c)
    if not abs(np.linalg.norm(normal) - 1) <= 1e-2:
        raise LeanSegError(f"{folder}: ImageOrientationPatient {iop.tolist()} is not two orthonormal directions")
    for p, ds in found:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=np.float64), iop, atol=_TOLERANCE):
            raise LeanSegError(f"{folder}/{p.name}: its orientation differs from the other slices' (a localiser "
                               "or a second stack?); give one stack per folder")
        if (int(ds.Rows), int(ds.Columns)) != (int(first.Rows), int(first.Columns)):
            raise LeanSegError(f"{folder}/{p.name}: {ds.Rows}x{ds.Columns} pixels, the first slice has "
                               f"{first.Rows}x{first.Columns}")
    found.sort(key=lambda item: float(np.dot(np.asarray(item[1].ImagePositionPatient, dtype=np.float64), normal)))
    return found, normal


def _positive(value, where: str, name: str) -> float:
    """A spacing from the header: a finite number above zero (a negative one would mirror the geometry)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LeanSegError(f"{where}: {name} {value!r} is not a number") from None
    if not np.isfinite(number) or number <= 0:
        raise LeanSegError(f"{where}: {name} {number} is not a positive finite spacing")
    return number


def read_dicom_series(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One series: ``(data (X, Y, Z) float32 as stored, column/row/slice order; affine 4x4 to RAS+ mm)``."""
    folder = Path(folder)
    found, normal = _sorted_slices(folder)
    first = found[0][1]
    iop = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    r, c = iop[:3], iop[3:]
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
        step = normal * _positive(first.get("SliceThickness", 1.0) or 1.0, f"{folder}/{found[0][0].name}",
                                  "SliceThickness")
    where = f"{folder}/{found[0][0].name}"
    if not np.isfinite(positions).all():
        raise LeanSegError(f"{where}: ImagePositionPatient is not finite")
    spacing = list(first.PixelSpacing)
    if len(spacing) != 2:
        raise LeanSegError(f"{where}: PixelSpacing {spacing} is not two numbers")
    row_spacing, col_spacing = (_positive(v, where, "PixelSpacing") for v in spacing)
    from leanseg import env

    voxels = int(first.Rows) * int(first.Columns) * len(found)
    if voxels > env.max_voxels():  # before the allocation: Rows and Columns are the header's word
        raise LeanSegError(f"{folder}: {first.Rows}x{first.Columns}x{len(found)} = {voxels:,} voxels, over the "
                           f"limit of {env.max_voxels():,} (LEANSEG_MAX_VOXELS raises it)")
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
        if not (np.isfinite(slope) and np.isfinite(intercept)):
            raise LeanSegError(f"{folder}/{p.name}: RescaleSlope {slope} / RescaleIntercept {intercept} is not finite")
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


def _highdicom():
    try:
        import highdicom
    except ImportError:
        raise LeanSegError("writing DICOM SEG needs highdicom: pip install 'leanseg[dicom]'") from None
    return highdicom


def check_seg_writer() -> None:
    """A one-line error, before any work, when highdicom (the DICOM SEG writer) is missing."""
    _highdicom()


def write_dicom_seg(path: str | os.PathLike, label_map: np.ndarray, geometry: NiftiGeometry,
                    source: str | os.PathLike, segments: Mapping[str, Sequence[int]], algorithm: str = "leanseg",
                    version: str = "") -> Path:
    """Write a label map (``(X, Y, Z)`` in RAS+ order, on ``geometry``, the grid ``read_dicom`` read from the
    series folder ``source``) as a DICOM Segmentation that references the series' slices, with one binary segment
    per entry of ``segments`` ({name: label values}; overlapping regions such as BraTS's WT/TC/ET are fine).

    highdicom builds the object (it checks the references, geometry and segment descriptions against the
    standard); the write is atomic.
    """
    from pydicom.sr.codedict import codes

    from leanseg.io._files import atomic_path

    hd = _highdicom()
    path, source = Path(path), Path(source)
    found, _ = _sorted_slices(source)
    images = [ds for _, ds in found]
    first = images[0]
    disk = geometry.from_canonical(np.asarray(label_map))  # (i column, j row, k slice) as read
    if disk.shape != (int(first.Columns), int(first.Rows), len(images)):
        raise LeanSegError(f"{path}: a {'x'.join(map(str, disk.shape))} label map does not fit the series "
                           f"{source} ({first.Columns}x{first.Rows}x{len(images)})")
    if not segments:
        raise LeanSegError(f"{path}: the model names no classes or regions to write as segments")
    # (slices, rows, columns, segments): frame k is the mask on source slice k
    masks = np.stack([np.isin(disk, list(values)) for values in segments.values()], -1).transpose(2, 1, 0, 3)
    family = codes.cid7162.ArtificialIntelligence
    ident = hd.AlgorithmIdentificationSequence(name=algorithm, version=version or "0", family=family)
    # the segments' meaning is the model's label names; the coded property is the generic "tissue"
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i + 1, segment_label=name[:64], segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=ident) for i, name in enumerate(segments)]
    try:
        seg = hd.seg.Segmentation(
            source_images=images, pixel_array=masks.astype(np.uint8), segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=hd.UID(),
            series_number=int(first.get("SeriesNumber", 0) or 0) + 1000, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="leanseg", manufacturer_model_name=algorithm[:64],
            software_versions=version or "0", device_serial_number="0",
            omit_empty_frames=bool(masks.any()))  # an empty prediction still needs frames
    except (ValueError, TypeError, AttributeError) as err:  # a source series missing what SEG must reference
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LeanSegError(f"{source}: cannot reference this series in a DICOM SEG ({first_line})") from None
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


__all__ = ["DICOM_SUFFIXES", "check_seg_writer", "is_dicom_folder", "read_dicom", "read_dicom_series",
           "write_dicom_seg"]
