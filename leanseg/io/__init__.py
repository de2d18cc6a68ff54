"""Volumes with their geometry: files -> ``(array, geometry)`` -> model -> the same geometry back to files.

``read_volume`` returns a float32 channel-first array (``(C, *spatial)``) and the geometry of its source;
``write_volume`` writes an array on that geometry in the format the output's suffix names. This package knows
nothing of models.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from leanseg.errors import LeanSegError
from leanseg.io._files import as_path, atomic_path, check_output, full_suffix, stem
from leanseg.io.dicom import DICOM_SUFFIXES, check_seg_writer, is_dicom_folder, read_dicom, write_dicom_seg
from leanseg.io.image import IMAGE_SUFFIXES, ImageGeometry, read_image, write_image
from leanseg.io.nifti import (
    BRATS_ALIASES,
    NIFTI_SUFFIXES,
    NiftiGeometry,
    channel_of,
    find_case_files,
    label_dtype,
    read_nifti,
    write_nifti,
)
from leanseg.io.segy import SEGY_SUFFIXES, SegyGeometry, SegyReader, SegyWriter, read_segy, write_segy

__all__ = [
    "BRATS_ALIASES", "DICOM_SUFFIXES", "ImageGeometry", "NiftiGeometry", "SegyGeometry", "SegyReader", "SegyWriter",
    "as_path", "atomic_path", "channel_of", "check_output", "check_seg_writer", "find_case_files", "full_suffix",
    "is_dicom_folder", "kind_of", "label_dtype", "read_dicom", "read_image", "read_nifti", "read_segy", "read_volume",
    "stem", "write_dicom_seg", "write_image", "write_nifti", "write_segy", "write_volume",
]


def kind_of(path: str | os.PathLike) -> str:
    """'nifti', 'segy', 'image', 'npy', 'dicom' (a .dcm file: DICOM SEG output) or 'folder' (a case or DICOM
    series folder), from the suffix."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    suffix = full_suffix(path)
    for kind, suffixes in (("nifti", NIFTI_SUFFIXES), ("segy", SEGY_SUFFIXES), ("image", IMAGE_SUFFIXES),
                           ("npy", (".npy",)), ("dicom", DICOM_SUFFIXES)):
        if suffix in suffixes:
            return kind
    raise LeanSegError(f"{path}: unknown file type {suffix or '(no suffix)'!r}; expected NIfTI (.nii, .nii.gz), "
                       f"SEG-Y (.sgy, .segy), an image ({', '.join(IMAGE_SUFFIXES)}), .npy or DICOM SEG (.dcm)")


def read_volume(inputs: str | os.PathLike | Sequence[str | os.PathLike], channels: Sequence[str] | None = None,
                aliases: dict[str, Sequence[str]] | None = None):
    """Read a volume: one file, several NIfTI files as channels, a case folder (channel files found by
    ``channels`` names, see ``find_case_files``) or DICOM series folders (one per channel, in order).
    Returns ``(array (C, *spatial) float32, geometry)``."""
    inputs = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if not inputs:
        raise LeanSegError("no input given")
    kinds = [kind_of(p) for p in inputs]
    if kinds[0] == "folder" and all(is_dicom_folder(p) for p in inputs):  # one DICOM series per channel
        return read_dicom(inputs)
    if kinds[0] == "folder":
        if len(inputs) > 1:
            raise LeanSegError(f"{inputs[0]}: give one case folder or a list of files, not both")
        if not channels:
            raise LeanSegError(f"{inputs[0]}: the checkpoint names no channels, so list the case's files instead")
        return read_nifti(find_case_files(inputs[0], channels, aliases))
    if len(inputs) > 1 and set(kinds) != {"nifti"}:
        raise LeanSegError(f"{inputs[1]}: several inputs are read as channels, which only NIfTI files can be")
    if kinds[0] == "nifti":
        return read_nifti(inputs)
    if kinds[0] == "segy":
        return read_segy(inputs[0])
    if kinds[0] == "image":
        return read_image(inputs[0])
    if kinds[0] == "dicom":
        raise LeanSegError(f"{inputs[0]}: one DICOM file; give the folder of its series")
    raise LeanSegError(f"{inputs[0]}: .npy is an output format only")


def write_volume(path: str | os.PathLike, array: np.ndarray, geometry) -> Path:
    """Write a label map (``(*spatial)`` integers) or probabilities (``(C, *spatial)`` float32) on ``geometry``,
    in the format of ``path``'s suffix: NIfTI, SEG-Y (labels only, on a SEG-Y geometry), image (2D) or .npy."""
    kind = kind_of(path)
    if kind == "nifti":
        spacing = geometry.spacing if geometry is not None else None
        return write_nifti(path, array, geometry if isinstance(geometry, NiftiGeometry) else None, spacing)
    if kind == "segy":
        if not isinstance(geometry, SegyGeometry):
            raise LeanSegError(f"{path}: SEG-Y output needs a SEG-Y input (its headers are copied)")
        if array.ndim != 3:
            raise LeanSegError(f"{path}: SEG-Y holds one value per sample; write probabilities as .npy or NIfTI")
        return write_segy(path, array.astype(np.float32), geometry)
    if kind == "image":
        if array.ndim != 2:
            raise LeanSegError(f"{path}: an image output needs a 2D label map, got shape {array.shape}")
        return write_image(path, array)
    if kind == "npy":
        with atomic_path(path) as tmp:
            np.save(tmp, array)
        return Path(path)
    if kind == "dicom":
        raise LeanSegError(f"{path}: DICOM SEG is written from a prediction of a DICOM series (leanseg.predict)")
    raise LeanSegError(f"{path}: cannot write a folder")
