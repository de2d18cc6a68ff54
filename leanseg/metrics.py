"""Dice and HD95 per class or region between a predicted and a reference label map (MONAI metrics)."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from leanseg.errors import LeanSegError
from leanseg.io import read_volume
from leanseg.labels import LabelManager

MAX_CLASSES = 1000  # found automatically; TotalSegmentator's largest task has 117


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


def tolerant_f1(pred, ref, tolerance: int = 1) -> dict[str, float]:
    """Precision, recall and F1 of a thin-structure mask (faults, membranes) with a tolerance of ``tolerance``
    voxels: a predicted voxel counts as right when a reference voxel lies within ``tolerance`` steps (any of the 26
    neighbours in 3D, 8 in 2D, per step), and a reference voxel as found when a predicted one does. A one-voxel
    sheet shifted by one voxel scores 0 Dice but 1 here; MONAI's surface metrics average distances instead, hence
    these lines. Both empty: 1."""
    from scipy import ndimage

    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise LeanSegError(f"tolerant_f1: prediction {pred.shape} and reference {ref.shape} differ in shape")
    grow = ndimage.generate_binary_structure(pred.ndim, pred.ndim)  # the full 3x3(x3) neighbourhood
    near_ref = ndimage.binary_dilation(ref, grow, iterations=tolerance) if tolerance else ref
    near_pred = ndimage.binary_dilation(pred, grow, iterations=tolerance) if tolerance else pred
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    precision = float((pred & near_ref).sum() / n_pred) if n_pred else float(n_ref == 0)
    recall = float((ref & near_pred).sum() / n_ref) if n_ref else float(n_pred == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def evaluate(prediction: str | os.PathLike, reference: str | os.PathLike,
             labels: LabelManager | dict | None = None,
             regions: dict | None = None, postprocess=None) -> dict[str, dict[str, float | None]]:
    """``{class or region: {"dice": ..., "hd95": ...}}``; HD95 in the files' units (mm), None where undefined.

    ``labels`` (a LabelManager, or {name: value} classes) or ``regions`` {name: [values]} pick what is scored, with
    the same label manager that training and prediction use (a class named "background" is not scored); by default
    every non-zero label value found in either file is a class. Dice of a class absent from both is 1.
    ``postprocess``: component rules (``leanseg.postprocess``; JSON text, a dict or a Postprocess) applied to the
    prediction before scoring; they name the classes or regions of ``labels``/``regions``.
    """
    import torch

    from leanseg.io import as_path

    pred, pred_geometry = read_volume(as_path(prediction, "prediction"))
    ref, ref_geometry = read_volume(as_path(reference, "reference"))
    for path, array in ((prediction, pred), (reference, ref)):
        if len(array) != 1:
            raise LeanSegError(f"{path}: {len(array)} channels; a label map has one")
        if not np.array_equal(array, np.rint(array)):
            raise LeanSegError(f"{path}: non-integer values; a label map holds integer labels (is it an image?)")
    if pred.shape != ref.shape:
        raise LeanSegError(f"{prediction}: shape {pred.shape[1:]} differs from the reference's {ref.shape[1:]}")
    affines = [np.asarray(g.affine) for g in (pred_geometry, ref_geometry) if hasattr(g, "affine")]
    if len(affines) == 2 and not np.allclose(affines[0], affines[1], atol=1e-3):
        raise LeanSegError(f"{prediction}: its grid (affine) differs from the reference's; the two are not aligned")
    pred, ref = pred[0].astype(np.int64), ref[0].astype(np.int64)
    if isinstance(labels, LabelManager):
        manager: LabelManager | None = labels
    elif labels or regions:
        manager = LabelManager(labels=dict(labels or {}), regions=dict(regions or {}))
    else:
        found = [int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0]
        if len(found) > MAX_CLASSES:
            raise LeanSegError(f"{reference}: {len(found)} distinct labels; give --labels or --regions (or is it "
                               "an image rather than a label map?)")
        manager = LabelManager(labels={f"label_{v}": v for v in found}) if found else None
    if postprocess is not None:
        from leanseg.postprocess import Postprocess

        if manager is None:
            raise LeanSegError("postprocess rules name classes or regions: give labels or regions (or a task/model)")
        pred = Postprocess.parse(postprocess, manager).apply(pred, manager)
    if manager is None or not manager.scored:
        return {}
    scored = LabelManager(regions=manager.scored)  # one binary mask per scored class or region
    from leanseg import env

    # two float masks per class (prediction, reference), and the distance maps of HD95 as many again
    env.check_budget(4 * len(scored.names) * int(pred.size), str(reference),
                     f"scoring {len(scored.names)} classes over {pred.size:,} voxels")
    p = torch.from_numpy(scored.masks(pred))[None].float()
    r = torch.from_numpy(scored.masks(ref))[None].float()
    spacing = list(getattr(pred_geometry, "spacing", None) or [1.0] * (p.ndim - 2))
    dice, hd = dice_hd95(p, r, spacing)

    def number(x):
        x = float(x)
        return None if math.isnan(x) or math.isinf(x) else round(x, 6)

    return {name: {"dice": number(dice[i]), "hd95": number(hd[i])} for i, name in enumerate(scored.names)}


def format_table(scores: dict[str, dict[str, float | None]]) -> str:
    width = max([len("class")] + [len(k) for k in scores])
    lines = [f"{'class':<{width}}  {'dice':>7}  {'hd95':>8}"]
    for name, s in scores.items():
        dice = "-" if s["dice"] is None else f"{s['dice']:.4f}"
        hd = "-" if s["hd95"] is None else f"{s['hd95']:.2f}"
        lines.append(f"{name:<{width}}  {dice:>7}  {hd:>8}")
    return "\n".join(lines)


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


__all__ = ["boundary_scores", "dice_hd95", "evaluate", "format_table", "tolerant_f1"]
