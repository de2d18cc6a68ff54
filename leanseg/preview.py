"""A PNG for people to look at: three orthogonal slices through the middle of the volume, labels overlaid.

``OrthoSlices`` collects the slices slab by slab, so a streamed cube gets a preview without being in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from leanseg.io.image import write_image

MIN_HEIGHT = 256  # pixels: panels of smaller volumes are enlarged by an integer factor

# label colours (RGB) cycled by label value; 0 is never drawn
_PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                     (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)], dtype=np.float32)


class OrthoSlices:
    """The middle slice across each axis of a ``(A, B[, C])`` volume, gathered from slabs along axis 0."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)
        self.mid = [n // 2 for n in self.shape]
        self.image: list[list[np.ndarray]] = [[] for _ in self.shape]
        self.labels: list[list[np.ndarray]] = [[] for _ in self.shape]

    def add(self, start: int, image: np.ndarray, labels: np.ndarray) -> None:
        """``image`` and ``labels`` hold positions ``start:start + len(labels)`` of axis 0."""
        if len(self.shape) == 2:  # a 2D image is its own preview: keep every row
            self.image[0].append(image)
            self.labels[0].append(labels)
            return
        if start <= self.mid[0] < start + len(labels):
            self.image[0].append(image[self.mid[0] - start])
            self.labels[0].append(labels[self.mid[0] - start])
        for axis in range(1, len(self.shape)):
            self.image[axis].append(np.take(image, self.mid[axis], axis=axis))
            self.labels[axis].append(np.take(labels, self.mid[axis], axis=axis))

    def panels(self) -> list[tuple[np.ndarray, np.ndarray]]:
        axes = range(1 if len(self.shape) == 2 else len(self.shape))
        return [(np.concatenate(self.image[a]), np.concatenate(self.labels[a])) for a in axes]

    def save(self, path: str | os.PathLike) -> Path:
        return save_preview(path, self.panels())


def _render(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    # window on the non-zero voxels: skull-stripped MRI is mostly exact zeros, which stay black
    inside = image[image != 0]
    lo, hi = np.percentile(inside, (1, 99)) if inside.size else (0.0, 1.0)
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)[..., None] * np.ones(3, np.float32) * 255
    grey[image == 0] = 0
    colour = _PALETTE[(labels.astype(np.int64) - 1) % len(_PALETTE)]
    mask = (labels != 0)[..., None]
    rgb = np.where(mask, 0.55 * grey + 0.45 * colour, grey)
    return np.rot90(rgb).astype(np.uint8)  # first axis left to right, second bottom to top


def save_preview(path: str | os.PathLike, panels: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    """Render ``(image, labels)`` 2D pairs side by side (4-pixel gaps) into one RGB PNG, atomically."""
    rendered = [_render(np.asarray(i, np.float32), np.asarray(lab)) for i, lab in panels]
    height = max(r.shape[0] for r in rendered)
    zoom = -(-MIN_HEIGHT // height)  # small volumes are blown up, pixel by pixel, to a viewable size
    if zoom > 1:
        rendered = [r.repeat(zoom, 0).repeat(zoom, 1) for r in rendered]
        height *= zoom
    padded = [np.pad(r, ((0, height - r.shape[0]), (0, 4), (0, 0))) for r in rendered]
    return write_image(path, np.concatenate(padded, axis=1)[:, :-4])
