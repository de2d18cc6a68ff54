"""Sliding-window prediction of slab after slab of one shape, stitched in one pass per window.

MONAI's ``sliding_window_inference`` (behind ``leanseg.inference.sliding_window_predict``) computes the Gaussian
weights and their sum over the windows on every call, and per window runs the activation into a new tensor, weights
it in place and adds it to the output: four passes over each window, then one division over the whole output. For a
SEG-Y cube streamed in slabs of one shape that was more time than reading, normalising and writing together.
``SlabStitcher`` keeps the weights and their sum across calls on inputs of one shape, and applies the activation,
the weighting and the accumulation in one C loop per window (``stitch_add`` in leanseg/nn/csrc/stitch.c; plain
PyTorch where no C compiler is found). The windows, their weights and the padding are MONAI's
(``dense_patch_slices``, ``compute_importance_map``, its padding rule), so the result equals MONAI's up to rounding
(tests/inference/test_stitch.py compares both against float64).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from tqdm.auto import tqdm

from leanseg.errors import LeanSegError
from leanseg.inference import ACTIVATIONS, _mirrored, check_options, check_window, check_window_count, mirror_pad
from leanseg.nn import _cext, backend
from leanseg.options import parse_window

_ACT_CODES = {"none": 0, "softmax": 1, "sigmoid": 2}  # stitch_add's act argument
SIGMA_SCALE = 0.125  # MONAI's default for the Gaussian weights: sliding_window_predict uses it too


def window_predictor(model: torch.nn.Module, activation: str, tta: bool, device: torch.device,
                     amp: bool) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """The per-window predictor and the activation left for the stitching to apply.

    Without TTA the network's raw output goes to the stitching, which applies the activation in its one pass;
    with TTA, or for an Ensemble (its own ``predictor``), the activation comes before the mean over the mirrorings
    or networks, so the window predictor applies it and the stitching applies none."""
    hook = getattr(model, "predictor", None)
    if callable(hook):
        return hook(activation, tta, device, amp), "none"
    if tta:
        return _mirrored(model, activation, True, device, amp), "none"
    return _mirrored(model, "none", False, device, amp), activation


def _scan_interval(shape: Sequence[int], window: Sequence[int], overlap: float) -> list[int]:
    """MONAI's steps between windows (its private ``_get_scan_interval``): window * (1 - overlap), at least 1."""
    return [w if w == n else max(1, int(w * (1 - overlap))) for n, w in zip(shape, window, strict=True)]


class SlabStitcher:
    """``stitcher(image)`` gives what ``sliding_window_predict`` gives for ``image`` ``(1, C, *spatial)``, float32
    or float64: ``(1, K, *spatial)`` probabilities in the image's dtype on the CPU. ``rows`` keeps only those
    positions of the first spatial axis (the centre of a streamed slab), and the division by the summed weights
    is done for them alone. The result is a view of the stitcher's accumulator: valid until the next call.

    ``predictor`` maps a batch of windows ``(B, C, *window)`` to ``(B, K, *window)``; ``activation`` ("softmax",
    "sigmoid" or "none") is applied to its output in the stitching pass. The weights, the window grid and the
    accumulator are kept for the last input shape, so slabs of one shape pay for them once.
    """

    def __init__(self, predictor: Callable[[torch.Tensor], torch.Tensor], window: int | Sequence[int], ndim: int,
                 activation: str = "softmax", overlap: float = 0.5, batch_size: int = 1, blend: str = "gaussian"):
        check_options(overlap=overlap, batch_size=batch_size)
        self.window = check_window(parse_window(window, ndim))
        self.predictor, self.act, self.overlap, self.batch_size, self.blend = (predictor, activation, overlap,
                                                                                batch_size, blend)
        self._weights: torch.Tensor | None = None  # (*window), in the dtype of the last input
        self._shape: tuple = ()  # (dtype, padded spatial shape) the grid below belongs to
        self._slices: list[tuple[slice, ...]] = []
        self._count: torch.Tensor | None = None  # (*padded): the windows' weights summed per voxel
        self._acc: torch.Tensor | None = None  # (K, *padded), reused from call to call

    @classmethod
    def for_model(cls, model: torch.nn.Module, window: int | Sequence[int], ndim: int, overlap: float = 0.5,
                  batch_size: int = 1, blend: str = "gaussian", tta: bool = False, activation: str = "softmax",
                  device: str | torch.device = "cpu", amp: bool = False, progress: bool = False) -> SlabStitcher:
        """A stitcher for ``model`` taking ``sliding_window_predict``'s options (``progress`` is the caller's: a
        slab's windows get no bar of their own)."""
        predictor, act = window_predictor(model, activation, tta, torch.device(device), amp)
        return cls(predictor, window, ndim, act, overlap=overlap, batch_size=batch_size, blend=blend)

    def _grid(self, padded: tuple[int, ...], dtype: torch.dtype) -> None:
        if self._shape == (dtype, padded):
            return
        check_window_count(padded, self.window, self.overlap)
        weights = compute_importance_map(self.window, mode=self.blend, sigma_scale=SIGMA_SCALE, device="cpu",
                                         dtype=dtype)
        self._weights = weights.contiguous()
        self._slices = dense_patch_slices(padded, self.window, _scan_interval(padded, self.window, self.overlap))
        count = torch.zeros(padded, dtype=dtype)
        for box in self._slices:
            count[box] += self._weights
        self._count, self._shape, self._acc = count, (dtype, padded), None

    def __call__(self, image: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        if image.ndim != len(self.window) + 2 or image.shape[0] != 1:
            raise ValueError(f"expected one image (1, C, *spatial) of {len(self.window)} spatial axes, got "
                             f"{tuple(image.shape)}")
        dtype, spatial = image.dtype, tuple(image.shape[2:])
        image, lows = mirror_pad(image, self.window)  # as sliding_window_predict: axes shorter than the window
        padded = tuple(image.shape[2:])
        self._grid(padded, dtype)
        assert self._weights is not None and self._count is not None  # set by _grid
        acc = self._acc
        for start in range(0, len(self._slices), self.batch_size):
            boxes = self._slices[start:start + self.batch_size]
            x = torch.cat([image[(slice(None), slice(None)) + box] for box in boxes]) if len(boxes) > 1 else \
                image[(slice(None), slice(None)) + boxes[0]]
            y = self.predictor(x).to("cpu", dtype)  # (B, K, *window)
            if tuple(y.shape[2:]) != self.window:
                raise ValueError(f"the network gave {tuple(y.shape[2:])} for a window of {self.window}: "
                                 "the stitching needs outputs of the window's size")
            if acc is None:
                acc = self._acc = torch.zeros((y.shape[1], *padded), dtype=dtype)
            elif start == 0:
                acc.zero_()
            for box, out in zip(boxes, y, strict=True):
                self._add(acc, out, box)
        assert acc is not None  # at least one window
        first = range(padded[0])[slice(lows[0], lows[0] + spatial[0])][rows]
        rest = zip(lows[1:], spatial[1:], strict=True)
        keep = (slice(first.start, first.stop),) + tuple(slice(lo, lo + n) for lo, n in rest)
        # divided in place, in the accumulator: no fresh buffer the size of the output to fault in per call
        return acc[(slice(None),) + keep].div_(self._count[keep])[None]

    def _add(self, acc: torch.Tensor, out: torch.Tensor, box: tuple[slice, ...]) -> None:
        """acc[:, box] += act(out) * weights, in one pass where the C library is built."""
        weights = self._weights
        assert weights is not None  # set by _grid before any window
        lib = backend.c_library(acc, dtypes=(torch.float32, torch.float64))
        if lib is None:
            acc[(slice(None),) + box] += ACTIVATIONS[self.act](out[None])[0] * weights
            return
        lead = (1,) * (4 - acc.ndim)  # 2D is the depth-1 case
        strides = (out.stride(0), *(0,) * len(lead), *out.stride()[1:])  # (K, d, h, w): channels-last needs no copy
        big, small = (*lead, *acc.shape[1:]), (*lead, *out.shape[1:])
        offsets = (*(0,) * len(lead), *(s.start for s in box))
        fn = getattr(lib, f"stitch_add_{_cext.suffix(acc.dtype)}")
        fn(acc.data_ptr(), acc.shape[0], *big, out.data_ptr(), *small, *strides, *offsets, weights.data_ptr(),
           _ACT_CODES[self.act], _cext.threads(out.numel()))


def slabs(length: int, slab: int, halo: int):
    """``(start, stop, lo, hi)`` of each slab: ``start:stop`` is written, ``lo:hi`` (with the halo) is read."""
    for start in range(0, length, slab):
        stop = min(start + slab, length)
        yield start, stop, max(0, start - halo), min(length, stop + halo)


def plan_slabs(length: int, window: int | Sequence[int], slab: int | None = None,
               halo: int | None = None) -> list[tuple[int, int, int, int]]:
    """``slabs`` with ``predict_streaming``'s defaults for ``slab`` and ``halo`` (see there), checked."""
    first = window if isinstance(window, int) else int(window[0])
    halo = first // 8 if halo is None else halo
    check_options(slab=slab, halo=halo)
    if halo > first:  # more context than a window sees is read for nothing, every slab
        raise LeanSegError(f"halo must be at most the window's first size ({first}) inlines, got {halo}")
    slab = slab or max(1, first - 2 * halo)
    return list(slabs(length, slab, halo))


def predict_streaming(model: torch.nn.Module, read: Callable[[int, int], np.ndarray], length: int,
                      write: Callable[[int, torch.Tensor], None], window: int | Sequence[int], slab: int | None = None,
                      halo: int | None = None, progress: bool = True, **options) -> None:
    """Predict a volume too large for memory, slab by slab along its first spatial axis.

    ``read(lo, hi)`` returns the input ``(C, hi - lo, *rest)``; ``write(start, probs)`` receives the probabilities
    ``(K, n, *rest)`` of positions ``start:start + n`` (a buffer reused by the next slab: copy what is kept).
    Each step writes ``slab`` positions predicted with ``halo`` positions of context on both sides, so a network
    whose receptive field reaches no further than the halo gives what one pass would. Defaults: halo an eighth of
    the window, slab the window less both halos (one window deep per step, so no position is predicted twice for
    nothing). ``options`` are ``sliding_window_predict``'s.
    """
    steps = plan_slabs(length, window, slab, halo)
    stitch = None  # slabs of one shape share the window weights and their sum (sliding_window_predict's result)
    for start, stop, lo, hi in tqdm(steps, desc="slabs", unit="slab", disable=not progress):
        x = torch.from_numpy(np.ascontiguousarray(read(lo, hi), dtype=np.float32))[None]
        stitch = stitch or SlabStitcher.for_model(model, window, x.ndim - 2, **options)
        write(start, stitch(x, slice(start - lo, stop - lo))[0])
