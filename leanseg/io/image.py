"""2D images (PNG, TIFF, ...) via scikit-image, channel-first float32 like the volume readers."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.io

from leanseg.errors import LeanSegError
from leanseg.io._files import atomic_path

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


@dataclass
class ImageGeometry:
    path: Path
    shape: tuple[int, int]  # (H, W)
    spacing: tuple[float, float] = (1.0, 1.0)


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageGeometry]:
    """A grey or RGB(A) image as float32 ``(C, H, W)`` (alpha dropped) and its geometry."""
    path = Path(path)
    if not path.is_file():
        raise LeanSegError(f"{path}: no such file")
    from leanseg import env

    try:
        import imageio.v3 as iio

        with warnings.catch_warnings():  # Pillow's decompression-bomb warning: the budget below decides instead
            warnings.filterwarnings("ignore", message="Image size")
            shape = iio.improps(path).shape  # the header's size, before decoding: a 140 kB PNG can claim 12000^2
            env.check_budget(int(np.prod(shape, dtype=np.int64)), str(path),
                             f"its header claims {'x'.join(map(str, shape))}")
            data = np.asarray(skimage.io.imread(path))
    except LeanSegError:
        raise
    except Exception as err:
        raise LeanSegError(f"{path}: not a readable image ({type(err).__name__}: {_first_line(err)})") from None
    if data.ndim == 2:
        data = data[None]
    elif data.ndim == 3 and data.shape[-1] in (3, 4):
        data = np.moveaxis(data[..., :3], -1, 0)
    else:
        raise LeanSegError(f"{path}: expected a grey or RGB image, got shape {data.shape}")
    data = data.astype(np.float32)
    if not np.isfinite(data).all():
        raise LeanSegError(f"{path}: image has NaN or infinite pixels")
    return np.ascontiguousarray(data), ImageGeometry(path, tuple(data.shape[1:]))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no detail"


def write_image(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an ``(H, W)`` label map (uint8 when it fits, else uint16) or ``(H, W, 3)`` RGB uint8, atomically."""
    path = Path(path)
    array = np.asarray(array)
    if array.dtype.kind in "iub" and array.ndim == 2:
        array = array.astype(np.uint8 if array.max(initial=0) <= 255 else np.uint16)
    with atomic_path(path) as tmp:
        skimage.io.imsave(tmp, array, check_contrast=False)
    return path
