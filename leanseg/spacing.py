"""Voxel spacing: parse a target spacing, and resample volumes to it and back onto their exact grid.

A checkpoint records the spacing it was trained at (``CheckpointMeta.spacing``); ``leanseg.predict`` resamples each
input to it and the probabilities back onto the input's grid, and decodes the labels from those (never
nearest-neighbour on labels). Training resamples its cases the same way (labels: one-hot, linearly, then argmax).

Resampling rescales the voxel grid along its own axes with the field of view kept: an axis of ``n`` voxels of
size ``s`` becomes ``round(n * s / t)`` voxels of size close to ``t``, voxel edges of the first and last voxels
staying where they were (``torch.nn.functional.interpolate`` with ``align_corners=False``). Going back with the
same rule lands exactly on the input's voxel centres, so the affine is never touched. MONAI's ``Spacing`` resamples
through the affine and picks its own output shape; its inverse would need a second affine resampling to come back
to the input's grid, which this axis-aligned rescale does not need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from leanseg.errors import LeanSegError

if TYPE_CHECKING:
    import torch

# Input spacings within this relative distance of the target are not resampled: headers write voxel sizes as
# float32 (0.9999999 mm), and a resampling for nothing costs a blur and the time of two interpolations
TOLERANCE = 1e-3


def parse_spacing(value: Any, ndim: int | None = None, *, what: str = "spacing") -> tuple[float, ...] | None:
    """'1,1,1' | '0.9x0.9x5' | 1.0 | (1, 1, 5) -> positive voxel sizes in mm; 'none' (or None) -> None.

    With ``ndim`` one size is repeated on every axis and another count is an error naming ``what``.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    try:
        if isinstance(value, str):
            sizes = tuple(float(v) for v in value.replace("x", ",").split(","))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            sizes = (float(value),)
        elif isinstance(value, Sequence) and not any(isinstance(v, bool) for v in value):
            sizes = tuple(float(v) for v in value)
        else:
            raise TypeError
    except (TypeError, ValueError):
        raise LeanSegError(f"{what} {value!r}: expected voxel sizes in mm, e.g. '1,1,1' or '1', or 'none'") from None
    if not sizes or not all(math.isfinite(s) and s > 0 for s in sizes):
        raise LeanSegError(f"{what} {value!r}: voxel sizes must be positive numbers of mm")
    if ndim is not None and len(sizes) == 1:
        return sizes * ndim
    if ndim is not None and len(sizes) != ndim:
        raise LeanSegError(f"{what} {value!r}: needs 1 or {ndim} sizes for {ndim}D data, got {len(sizes)}")
    return sizes


def target_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """The grid covering the same field of view at ``target`` spacing: ``round(n * s / t)`` voxels, at least 1."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def needs_resampling(spacing: Sequence[float], target: Sequence[float] | None) -> bool:
    return target is not None and any(abs(s - t) > TOLERANCE * t for s, t in zip(spacing, target, strict=True))


def resample(array: np.ndarray | torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(C, *spatial)`` -> ``(C, *shape)`` by linear interpolation (bilinear in 2D, trilinear in 3D), one channel
    at a time so that memory holds one extra channel at most. float64 stays float64; anything else is computed and
    returned in float32."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(array)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    ndim = x.ndim - 1
    if ndim not in (1, 2, 3) or len(shape) != ndim:
        raise LeanSegError(f"resample: a (C, *spatial) array of 1 to 3 spatial axes and {ndim} sizes, got shape "
                           f"{tuple(x.shape)} to {tuple(shape)}")
    shape = tuple(int(n) for n in shape)
    if tuple(x.shape[1:]) == shape:
        return x.to(dtype)
    mode = ("linear", "bilinear", "trilinear")[ndim - 1]
    out = torch.empty((x.shape[0], *shape), dtype=dtype)
    for c in range(x.shape[0]):
        out[c] = F.interpolate(x[c][None, None].to(dtype), size=shape, mode=mode, align_corners=False)[0, 0]
    return out


def resample_labels(label: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A label map ``(*spatial)`` on another grid: each value's mask interpolated linearly (as probabilities are),
    then the value of the largest, as nnU-Net resamples segmentations. One mask in memory at a time."""
    values = np.unique(label)
    if tuple(label.shape) == tuple(shape):
        return label
    best = np.full(tuple(shape), -1.0, dtype=np.float32)
    out = np.zeros(tuple(shape), dtype=label.dtype)
    for value in values:
        mask = resample((label == value)[None].astype(np.float32), shape)[0].numpy()
        better = mask > best
        out[better] = value
        np.maximum(best, mask, out=best)
    return out


def check_resampled(shape: Sequence[int], channels: int, where: str) -> None:
    """A training case resampled to a target spacing holds its channels, the label and a mask per label value while
    it is made: checked against the budget before it is (a 10 mm case at 1 mm is 1000x the voxels)."""
    from leanseg import env

    env.check_budget(math.prod(shape) * (channels + 3), where,
                     f"resampling makes {'x'.join(map(str, shape))} voxels x {channels} channel(s)")


__all__ = ["TOLERANCE", "check_resampled", "needs_resampling", "parse_spacing", "resample", "resample_labels",
           "target_shape"]
