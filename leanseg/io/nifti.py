"""NIfTI volumes via nibabel: read to one canonical (RAS) axis order, write back on the input's exact grid.

Arrays given to and returned by this module are channel-first, ``(C, X, Y, Z)`` in RAS+ voxel order, float32.
The geometry keeps the input's header, so a result is written with the input's shape, affine, qform/sform and
their codes, whatever orientation the input had.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from leanseg.errors import LeanSegError
from leanseg.io._files import atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")

# Channel name -> file-name tokens that mean it, covering BraTS 2015 (Flair, T1c), 2020/2021 (t1, t1ce, t2,
# flair), 2023 (t1n, t1c, t2w, t2f) and BraTS-Toolkit (fla). Tokens are the parts of a file name split on _ - .
BRATS_ALIASES: dict[str, tuple[str, ...]] = {
    "t1": ("t1", "t1n", "t1w"),
    "t1c": ("t1c", "t1ce", "t1gd"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "fla", "t2f"),
}
_ALIAS_OF = {alias: name for name, aliases in BRATS_ALIASES.items() for alias in aliases}


@dataclass
class NiftiGeometry:
    """Where a NIfTI volume lives: the header to write results with and the reorientation to undo."""

    header: nib.Nifti1Header  # the first input's header (affine, qform/sform and codes, zooms, units)
    shape: tuple[int, ...]  # spatial shape on disk
    ornt: np.ndarray  # nibabel orientation: disk voxel axes -> RAS+ (io_orientation of the affine)
    path: Path

    @property
    def affine(self) -> np.ndarray:
        return self.header.get_best_affine()

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size along the canonical (RAS) axes."""
        zooms = self.header.get_zooms()[:3]
        return tuple(float(zooms[int(axis)]) for axis in np.argsort(self.ornt[:, 0]))

    def to_canonical(self, data: np.ndarray) -> np.ndarray:
        """``(X, Y, Z, ...)`` as on disk -> the same array in RAS+ axis order."""
        return nib.orientations.apply_orientation(data, self.ornt)

    def from_canonical(self, data: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_canonical`."""
        back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), self.ornt)
        return nib.orientations.apply_orientation(data, back)


def _load(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    if not path.is_file():
        raise LeanSegError(f"{path}: no such file")
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises ImageFileError, HeaderDataError, OSError, EOFError...
        raise LeanSegError(f"{path}: not a readable NIfTI file ({_short(err)})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise LeanSegError(f"{path}: not a NIfTI file (nibabel reads it as {type(img).__name__})")
    return img


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _check_header(img, path: Path) -> int:
    """Refuse, from the header alone, what cannot be read safely; returns the number of voxels it claims."""
    shape = tuple(int(n) for n in img.shape)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise LeanSegError(f"{path}: expected a 3D or 4D volume, got shape {shape}")
    if img.get_data_dtype().kind == "c":
        raise LeanSegError(f"{path}: complex-valued data ({img.get_data_dtype()}); save the magnitude as a real image")
    affine = img.affine
    if not np.isfinite(affine).all():
        raise LeanSegError(f"{path}: the affine (sform/qform) holds NaN or infinite values")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise LeanSegError(f"{path}: the affine is singular (a zero voxel size or a zero sform); fix the header")
    return int(np.prod(shape, dtype=np.int64))


def _data(img, path: Path) -> np.ndarray:
    """The scaled voxel values as float32 (slope/intercept applied, any dtype or endianness)."""
    try:
        data = np.asanyarray(img.dataobj).astype(np.float32, copy=False)
    except Exception as err:  # zlib.error, EOFError, OSError on truncated or damaged files
        raise LeanSegError(f"{path}: truncated or damaged NIfTI data ({_short(err)})") from None
    if data.ndim not in (3, 4):
        raise LeanSegError(f"{path}: expected a 3D or 4D volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        bad = int(np.size(data) - np.isfinite(data).sum())
        raise LeanSegError(f"{path}: {bad} voxels are NaN or infinite; fix or mask them before predicting")
    return data


def _geometry(img, path: Path) -> NiftiGeometry:
    """The grid of a checked header: orientation, and voxel sizes that are finite and positive (a NaN pixdim would
    otherwise reach resampling, or training's median spacing)."""
    ornt = nib.orientations.io_orientation(img.affine)
    if np.isnan(ornt).any() or len(set(ornt[:, 0].tolist())) != 3:
        raise LeanSegError(f"{path}: the affine maps two voxel axes to one direction; fix the header")
    geometry = NiftiGeometry(img.header.copy(), tuple(int(n) for n in img.shape[:3]), ornt, path)
    spacing = geometry.spacing
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise LeanSegError(f"{path}: voxel size (pixdim) {list(spacing)} is not finite and positive; fix the header")
    return geometry


def nifti_geometry(path: str | os.PathLike) -> NiftiGeometry:
    """A NIfTI file's grid from its header alone (no voxel is read), checked as ``read_nifti`` checks it."""
    path = Path(path)
    img = _load(path)
    _check_header(img, path)
    return _geometry(img, path)


def read_nifti(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[np.ndarray, NiftiGeometry]:
    """Read one NIfTI file (3D, or 4D with channels on the last axis) or several 3D files as channels.

    Returns ``(array, geometry)`` with ``array`` float32 ``(C, X, Y, Z)`` in RAS+ order. Several files must share
    shape and affine (to 1e-4 mm); the geometry is the first file's.
    """
    from leanseg import env

    files = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
    if not files:
        raise LeanSegError("no input files given")
    # every header first: shapes, grids and sizes are checked before any voxel is read
    images = [_load(path) for path in files]
    total = 0
    geometry: NiftiGeometry | None = None
    for path, img in zip(files, images, strict=True):
        total += _check_header(img, path)
        if len(files) > 1 and len(img.shape) == 4:
            raise LeanSegError(f"{path}: a 4D file among several inputs; give one 4D file or one 3D file per channel")
        spatial = tuple(int(n) for n in img.shape[:3])
        if geometry is None:
            geometry = _geometry(img, path)
        elif spatial != geometry.shape:
            raise LeanSegError(f"{path}: shape {spatial} differs from {geometry.path.name}'s {geometry.shape}")
        elif not np.allclose(img.affine, geometry.affine, atol=1e-4):
            raise LeanSegError(f"{path}: affine differs from {geometry.path.name}'s; resample the modalities to "
                               f"one grid first")
        if total > env.max_voxels():
            raise LeanSegError(f"{path}: the header claims {'x'.join(map(str, img.shape))} voxels, {total:,} in all "
                               f"with the other inputs, over the limit of {env.max_voxels():,} "
                               "(LEANSEG_MAX_VOXELS raises it)")
    assert geometry is not None  # files is not empty
    channels: list[np.ndarray] = []
    for path, img in zip(files, images, strict=True):
        data = _data(img, path)
        data = data[..., None] if data.ndim == 3 else data
        channels.extend(np.moveaxis(geometry.to_canonical(data), -1, 0))
    return np.ascontiguousarray(np.stack(channels)), geometry


def label_dtype(max_value: int) -> np.dtype:
    """The smallest integer dtype that every NIfTI reader handles for a label map."""
    return np.dtype(np.uint8 if max_value <= 255 else np.int16 if max_value <= 32767 else np.int32)


def write_nifti(path: str | os.PathLike, array: np.ndarray, geometry: NiftiGeometry | None = None,
                spacing: Sequence[float] | None = None) -> Path:
    """Write ``array`` (``(X, Y, Z)`` labels or ``(C, X, Y, Z)`` channels, canonical order) on ``geometry``'s grid.

    The dtype is the array's (labels: integers; probabilities: float32). With no geometry (a SEG-Y or image
    input) the affine is diagonal with ``spacing``. The write is atomic.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim == 4:  # (C, X, Y, Z) -> (X, Y, Z, C): NIfTI keeps channels on the 4th axis
        array = np.moveaxis(array, 0, -1)
    if geometry is None:
        steps = [*(spacing or ())][:3]
        img = nib.Nifti1Image(array, np.diag([*steps, *[1.0] * (3 - len(steps)), 1.0]))  # a 2D image: 1 in z
    else:
        array = geometry.from_canonical(array)
        header = geometry.header.copy()
        header.set_data_dtype(array.dtype)
        header.set_slope_inter(np.nan, np.nan)  # the values are written as they are, unscaled
        klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        img = klass(array, None, header=header)
        qform, qcode = geometry.header.get_qform(coded=True)
        sform, scode = geometry.header.get_sform(coded=True)
        img.set_qform(qform if qform is not None else geometry.affine, int(qcode))
        img.set_sform(sform if sform is not None else geometry.affine, int(scode))
    img.set_data_dtype(array.dtype)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path


def _tokens(name: str) -> list[str]:
    name = name.lower()
    for suffix in NIFTI_SUFFIXES[::-1]:
        name = name.removesuffix(suffix)
    return [t for t in re.split(r"[_\-.\s]+", name) if t]


def _name_table(channels: Sequence[str], aliases: Mapping[str, Sequence[str]] | None = None) -> dict[str, set[str]]:
    """Channel name -> the file-name tokens that mean it."""
    table = {name: {name.lower(), *BRATS_ALIASES.get(_ALIAS_OF.get(name.lower(), name.lower()), ())}
             for name in channels}
    for name, extra in (aliases or {}).items():
        table.setdefault(name, {name.lower()}).update(a.lower() for a in extra)
    return table


def channel_of(path: str | os.PathLike, channels: Sequence[str]) -> str | None:
    """The one channel of ``channels`` that the file name ``path`` names (as ``find_case_files`` reads names), or
    None when it names none or several."""
    tokens = set(_tokens(Path(path).name))
    hits = [name for name, names in _name_table(channels).items() if names & tokens]
    return hits[0] if len(hits) == 1 else None


def find_case_files(folder: str | os.PathLike, channels: Sequence[str],
                    aliases: Mapping[str, Sequence[str]] | None = None) -> list[Path]:
    """The NIfTI file of each channel in a case folder, in the order of ``channels``.

    A file belongs to channel ``c`` when one token of its name (split on ``_ - .``) is ``c`` or one of its
    aliases (``BRATS_ALIASES`` plus ``aliases``), case-insensitively: ``Flair_subtrMeanDivStd.nii.gz``,
    ``BraTS20_Training_001_t1ce.nii.gz`` and ``BraTS-GLI-00000-000-t2f.nii.gz`` are all found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LeanSegError(f"{folder}: no such folder")
    table = _name_table(channels, aliases)
    files = sorted(p for p in folder.iterdir() if p.name.lower().endswith(NIFTI_SUFFIXES))
    found = []
    for name in channels:
        hits = [p for p in files if table[name] & set(_tokens(p.name))]
        if len(hits) != 1:
            what = "no file" if not hits else f"{len(hits)} files ({', '.join(p.name for p in hits)})"
            raise LeanSegError(f"{folder}: {what} for channel {name!r} (names tried: {', '.join(sorted(table[name]))})"
                               f"; pass the files explicitly instead")
        found.append(hits[0])
    return found
