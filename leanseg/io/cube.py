"""Training cubes stored without geometry: FaultSeg3D's headerless float32 ``.dat`` files and ``.npy`` arrays.

Predict never reads these (a prediction needs a grid to write back to); training tasks read them here, through
leanseg.io like every other file. NIfTI cubes go through ``read_nifti``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from leanseg import env
from leanseg.errors import LeanSegError
from leanseg.io._files import full_suffix
from leanseg.io.nifti import NIFTI_SUFFIXES, read_nifti

CUBE_SUFFIXES = (".dat", ".npy", *NIFTI_SUFFIXES)


def read_cube(path: str | os.PathLike) -> np.ndarray:
    """A 3D cube as a float32 ``(X, Y, Z)`` array: ``.dat`` (raw little-endian float32, cubic, side from the size),
    ``.npy`` (no pickles) or NIfTI (single channel)."""
    path = Path(path)
    if not path.is_file():
        raise LeanSegError(f"{path}: no such file")
    suffix = full_suffix(path)
    if suffix == ".dat":
        size = path.stat().st_size
        n = round((size / 4) ** (1 / 3))
        if n < 1 or n**3 * 4 != size:
            raise LeanSegError(f"{path}: {size} bytes is not a cube of float32 values")
        env.check_budget(n**3, str(path), f"a {n}^3 cube")
        data = np.fromfile(path, "<f4").reshape(n, n, n)
    elif suffix == ".npy":
        try:
            with open(path, "rb") as f:  # the header first: its shape is checked before the data is read
                major, _ = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else \
                    np.lib.format.read_array_header_2_0
                shape, _, _ = read_header(f)
            env.check_budget(int(np.prod(shape, dtype=np.int64)), str(path), f"its header claims {shape}")
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            if isinstance(err, LeanSegError):
                raise
            raise LeanSegError(f"{path}: not a readable .npy array ({str(err).splitlines()[0] if str(err) else err})"
                               ) from None
    elif suffix in NIFTI_SUFFIXES:
        array, _ = read_nifti(path)
        if len(array) != 1:
            raise LeanSegError(f"{path}: expected one channel, got {len(array)}")
        data = array[0]
    else:
        raise LeanSegError(f"{path}: unknown cube format {suffix!r}; expected {', '.join(CUBE_SUFFIXES)}")
    if data.ndim != 3 or data.dtype.kind not in "iufb":
        raise LeanSegError(f"{path}: expected a 3D numeric array, got shape {data.shape} of {data.dtype}")
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise LeanSegError(f"{path}: holds NaN or infinite values")
    return data
