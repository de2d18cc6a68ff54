"""Sliding-window prediction in 2D and 3D, in memory or streamed slab by slab for cubes larger than RAM.

``sliding_window_predict`` is MONAI's ``sliding_window_inference`` with what a segmentation needs around it:
activation per window (so windows blend as probabilities), mirroring test-time augmentation, autocast on GPU,
and stitching on the CPU (``device="cpu"``) so that GPU memory does not grow with the volume.

``predict_streaming`` is ours: MONAI's sliding window needs the whole input and output in memory. It reads slabs
along the first spatial axis with a halo of context on each side, predicts each with ``sliding_window_predict``
and hands the slab's centre to a writer, so peak memory is bounded by the slab, not the volume.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from tqdm.auto import tqdm

from leanseg.options import parse_window

ACTIVATIONS = {"softmax": lambda y: torch.softmax(y, dim=1), "sigmoid": torch.sigmoid, "none": lambda y: y}


def _mirrored(model: torch.nn.Module, activation: str, tta: bool, device: torch.device, amp: bool) -> Callable:
    """The per-window predictor: activation, then the mean over every mirroring of the spatial axes (TTA)."""
    activate = ACTIVATIONS[activation]

    def predict(x: torch.Tensor) -> torch.Tensor:  # (B, C, *window)
        spatial = range(2, x.ndim)
        flips = [c for r in range(len(spatial) + 1) for c in itertools.combinations(spatial, r)] if tta else [()]
        x = x.to(device)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            total: torch.Tensor | None = None
            for axes in flips:
                y = activate(model(x.flip(axes) if axes else x).float())
                y = y.flip(axes) if axes else y
                total = y if total is None else total + y
        assert total is not None  # flips holds at least the identity
        return total / len(flips)

    return predict


@torch.no_grad()
def sliding_window_predict(model: torch.nn.Module, image: torch.Tensor, window: int | Sequence[int],
                           overlap: float = 0.5, batch_size: int = 1, blend: str = "gaussian", tta: bool = False,
                           activation: str = "softmax", device: str | torch.device = "cpu", amp: bool = False,
                           progress: bool = False) -> torch.Tensor:
    """Probabilities ``(N, K, *spatial)`` float32 on the CPU for ``image`` ``(N, C, *spatial)`` (2D or 3D).

    ``window`` is an int (every axis) or one size per axis; a volume smaller than the window is padded.
    ``blend``: "gaussian" (weights fall off towards window borders) or "constant". ``amp`` autocasts on CUDA only.
    """
    device = torch.device(device)
    window = parse_window(window, image.ndim - 2)
    # an Ensemble (leanseg.ensemble) brings its own predictor: several networks, one sliding window
    hook = getattr(model, "predictor", None)
    predictor = hook(activation, tta, device, amp) if callable(hook) else _mirrored(model, activation, tta, device, amp)
    out = sliding_window_inference(image.float(), window, batch_size, predictor, overlap=overlap, mode=blend,
                                   sw_device=device, device="cpu", progress=progress)
    assert isinstance(out, torch.Tensor)  # one tensor in, one predictor output: one tensor out
    return out


def slabs(length: int, slab: int, halo: int):
    """``(start, stop, lo, hi)`` of each slab: ``start:stop`` is written, ``lo:hi`` (with the halo) is read."""
    for start in range(0, length, slab):
        stop = min(start + slab, length)
        yield start, stop, max(0, start - halo), min(length, stop + halo)


def predict_streaming(model: torch.nn.Module, read: Callable[[int, int], np.ndarray], length: int,
                      write: Callable[[int, torch.Tensor], None], window: int | Sequence[int], slab: int | None = None,
                      halo: int | None = None, progress: bool = True, **options) -> None:
    """Predict a volume too large for memory, slab by slab along its first spatial axis.

    ``read(lo, hi)`` returns the input ``(C, hi - lo, *rest)``; ``write(start, probs)`` receives the probabilities
    ``(K, n, *rest)`` of positions ``start:start + n``. Each step writes ``slab`` positions predicted with ``halo``
    positions of context on both sides, so a network whose receptive field reaches no further than the halo gives
    what one pass would. Defaults: halo an eighth of the window, slab the window less both halos (one window deep
    per step, so no position is predicted twice for nothing). ``options`` go to ``sliding_window_predict``.
    """
    first = window if isinstance(window, int) else int(window[0])
    halo = first // 8 if halo is None else halo
    slab = slab or max(1, first - 2 * halo)
    steps = list(slabs(length, slab, halo))
    for start, stop, lo, hi in tqdm(steps, desc="slabs", unit="slab", disable=not progress):
        x = torch.from_numpy(np.ascontiguousarray(read(lo, hi), dtype=np.float32))[None]
        probs = sliding_window_predict(model, x, window, **options)[0]
        write(start, probs[:, start - lo: stop - lo])
