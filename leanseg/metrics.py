"""Dice and HD95 per class or region between a predicted and a reference label map (MONAI metrics)."""

from __future__ import annotations

import math
import os
import warnings
from importlib import import_module

import numpy as np

from leanseg.errors import LeanSegError
from leanseg.io import read_volume


def task_classes(task: str) -> dict:
    """``{"labels": ...}`` or ``{"regions": ...}`` from the pipeline ``pipelines.<task>``: what its checkpoints say."""
    try:
        module = import_module(f"pipelines.{task}")
    except ModuleNotFoundError:
        raise LeanSegError(f"--task {task!r}: no such task (pipelines.{task})") from None
    if not hasattr(module, "checkpoint_meta"):
        raise LeanSegError(f"--task {task!r}: the task defines no labels or regions")
    meta = module.checkpoint_meta(module.Config())
    return {k: meta[k] for k in ("labels", "regions") if k in meta}


def dice_hd95(pred, ref, spacing=None, hd95: bool = True):
    """Dice and (optionally) HD95 per channel of binary masks ``(1, K, *spatial)`` (torch), by MONAI's metrics.

    Dice of a class empty in both is 1; HD95 is NaN or inf where a mask is empty (undefined), None when not asked.
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance

    dice = compute_dice(pred, ref, include_background=True, ignore_empty=False)[0]
    if not hd95:
        return dice, None
    with warnings.catch_warnings():  # MONAI warns for every empty class, and about its own deprecated arguments
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(pred, ref, include_background=True, percentile=95, spacing=spacing)[0]
    return dice, hd


def _masks(label: np.ndarray, classes: dict[str, list[int]]) -> np.ndarray:
    return np.stack([np.isin(label, values) for values in classes.values()])


def evaluate(prediction: str | os.PathLike, reference: str | os.PathLike, labels: dict | None = None,
             regions: dict | None = None) -> dict[str, dict[str, float | None]]:
    """``{class or region: {"dice": ..., "hd95": ...}}``; HD95 in the files' units (mm), None where undefined.

    ``labels`` {name: value} or ``regions`` {name: [values]} pick the classes; by default every non-zero label
    value found in either file is a class. Dice of a class absent from both is 1.
    """
    import torch

    pred, pred_geometry = read_volume(prediction)
    ref, _ = read_volume(reference)
    if pred.shape != ref.shape:
        raise LeanSegError(f"{prediction}: shape {pred.shape[1:]} differs from the reference's {ref.shape[1:]}")
    pred, ref = np.rint(pred[0]).astype(np.int64), np.rint(ref[0]).astype(np.int64)
    if regions:
        classes = {name: list(values) for name, values in regions.items()}
    elif labels:
        classes = {name: [value] for name, value in labels.items() if value != 0}
    else:
        classes = {f"label_{v}": [int(v)] for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0}
    if not classes:
        return {}
    p = torch.from_numpy(_masks(pred, classes))[None].float()
    r = torch.from_numpy(_masks(ref, classes))[None].float()
    spacing = list(getattr(pred_geometry, "spacing", None) or [1.0] * (p.ndim - 2))
    dice, hd = dice_hd95(p, r, spacing)

    def number(x):
        x = float(x)
        return None if math.isnan(x) or math.isinf(x) else round(x, 6)

    return {name: {"dice": number(dice[i]), "hd95": number(hd[i])} for i, name in enumerate(classes)}


def format_table(scores: dict[str, dict[str, float | None]]) -> str:
    width = max([len("class")] + [len(k) for k in scores])
    lines = [f"{'class':<{width}}  {'dice':>7}  {'hd95':>8}"]
    for name, s in scores.items():
        dice = "-" if s["dice"] is None else f"{s['dice']:.4f}"
        hd = "-" if s["hd95"] is None else f"{s['hd95']:.2f}"
        lines.append(f"{name:<{width}}  {dice:>7}  {hd:>8}")
    return "\n".join(lines)


__all__ = ["evaluate", "format_table", "task_classes"]


def boundary_scores(pred: np.ndarray, ref: np.ndarray, boundary) -> dict[str, float]:
    """Scores of a 2D boundary map (EM membranes): Dice of the boundary class, pixel error, and the adapted Rand
    error of the partition into regions (ISBI 2012's main metric).

    ``pred`` and ``ref`` are label maps of the same shape where ``boundary`` marks the membranes and every other
    value the interiors. The regions are the 4-connected components of the interiors (scikit-image labels them);
    ``adapted_rand_error`` ignores reference label 0, i.e. the membranes themselves.
    """
    from skimage.measure import label
    from skimage.metrics import adapted_rand_error

    if pred.shape != ref.shape:
        raise LeanSegError(f"prediction shape {pred.shape} differs from the reference's {ref.shape}")
    p, r = pred == boundary, ref == boundary
    total = p.sum() + r.sum()
    dice = 2 * float((p & r).sum()) / float(total) if total else 1.0
    regions_p, regions_r = label(~p, connectivity=1), label(~r, connectivity=1)
    rand_error = adapted_rand_error(regions_r, regions_p)[0]
    return {"boundary_dice": dice, "pixel_error": float((p != r).mean()), "rand_error": float(rand_error)}
