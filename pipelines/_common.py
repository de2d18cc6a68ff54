"""Pieces the segmentation tasks share: the config base, NIfTI reading, label checks, losses, Dice, validation.

A task module is a declarative description; what is the same for every task lives here so the modules stay short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from leanseg.errors import LeanSegError


@dataclass
class TaskConfig:
    """Defaults every task has; a task subclasses it and overrides the values with its own reasons."""

    spatial_dims: int = 3
    channels: tuple[str, ...] = ()  # input channel names, in the order the model sees them
    classes: tuple[str, ...] = ()  # output channel names (regions for sigmoid tasks, classes for softmax ones)
    sigmoid: bool = True  # independent sigmoid outputs (overlapping regions) or one softmax over classes
    window: tuple[int, ...] = (64, 64, 64)
    batch_size: int = 2
    samples_per_case: int = 2  # patches drawn per case load: amortises loading and normalising a volume
    epochs: int = 50
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine" or "poly" (nnU-Net's (1 - t)^0.9)
    model: str = "lean_unet"
    model_kwargs: dict = field(default_factory=dict)
    synthetic_size: int = 64  # edge of a synthetic volume or image
    val_fraction: float = 0.2  # of the cases, held out for validation (at least one)
    hd95: bool = True  # report HD95 at validation (scipy distance transforms: cheap next to the forward)


def seeded_cases(make, n: int, seed: int, size: int, prefix: str, **extra) -> list[dict]:
    """``n`` generated cases ``{"id", "image", "label", **extra}``; case i is ``make(rng, size)`` with the generator
    seeded by (seed, i), so a synthetic data set is a function of its seed."""
    cases = []
    for i in range(n):
        image, label = make(np.random.default_rng([seed, i]), size)
        cases.append({"id": f"{prefix}_{i:03d}", "image": image, "label": label, **extra})
    return cases


def synthetic_window(cfg: TaskConfig) -> tuple[int, ...]:
    """Synthetic volumes are small: a window no larger than the volume, a multiple of 16 for 4 network levels."""
    return tuple(min(w, max(16, cfg.synthetic_size // 16 * 16)) for w in cfg.window)


def read_nifti(path: Path) -> np.ndarray:
    """The voxel array of a NIfTI file in the closest canonical (RAS) orientation, as `leanseg predict` sees it."""
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        return np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises several types for truncated or foreign files
        raise LeanSegError(f"{path}: cannot read as NIfTI ({err})") from err


def check_labels(label: np.ndarray, allowed: set[int], path) -> np.ndarray:
    """Integer labels, or a one-line error naming the file and the values outside ``allowed``."""
    values = np.unique(label)
    if not np.all(values == np.round(values)):
        raise LeanSegError(f"{path}: label map has non-integer values")
    bad = sorted(set(values.astype(np.int64).tolist()) - allowed)
    if bad:
        raise LeanSegError(f"{path}: label values {bad} are not in this task's set {sorted(allowed)}")
    return label.astype(np.int64)


def missing_error(what: str, root, missing: list[str]) -> LeanSegError:
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    return LeanSegError(f"{root}: {len(missing)} {what} missing: {shown}")


class DiceBCELoss(nn.Module):
    """Dice + BCE on sigmoid outputs. MONAI's DiceCELoss switches to softmax CE when there are several channels,
    which is wrong for overlapping regions, so the two MONAI/torch pieces are summed here."""

    def __init__(self, pos_weight: float | None = None):
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float()
        pw = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
        return self.dice(logits, target) + bce


def softmax_dice_ce():
    """Dice + cross-entropy over softmax classes; the target is a (N, 1, ...) class-index map."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)


def to_mask(logits: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """(N, K, ...) logits -> (N, K, ...) {0, 1} masks: thresholded sigmoid, or one-hot argmax."""
    if sigmoid:
        return (logits > 0).float()
    return nn.functional.one_hot(logits.argmax(1), logits.shape[1]).movedim(-1, 1).float()


def target_mask(target: torch.Tensor, n: int, sigmoid: bool) -> torch.Tensor:
    if sigmoid:
        return target.float()
    return nn.functional.one_hot(target[:, 0].long(), n).movedim(-1, 1).float()


def batch_dice(logits: torch.Tensor, target: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """Per-channel Dice of a training batch (for the progress bar); 1 where both masks are empty."""
    pred = to_mask(logits.detach(), sigmoid)
    ref = target_mask(target, logits.shape[1], sigmoid)
    dims = [0] + list(range(2, pred.ndim))
    inter = (pred * ref).sum(dims)
    total = pred.sum(dims) + ref.sum(dims)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


@torch.no_grad()
def validate_case(model: nn.Module, image: torch.Tensor, label: torch.Tensor, cfg: TaskConfig,
                  overlap: float = 0.5) -> dict[str, float]:
    """Sliding-window prediction of one whole (cropped) case and its Dice (and HD95) per output channel."""
    from monai.inferers import sliding_window_inference

    from leanseg.metrics import dice_hd95

    logits = sliding_window_inference(image, cfg.window, sw_batch_size=2, predictor=model, overlap=overlap,
                                      mode="gaussian")
    pred = to_mask(logits, cfg.sigmoid)
    ref = target_mask(label, len(cfg.classes), cfg.sigmoid)
    dice, hd = dice_hd95(pred, ref, hd95=cfg.hd95)
    out = {f"dice_{name}": float(d) for name, d in zip(cfg.classes, dice, strict=True)}
    if hd is not None:
        out |= {f"hd95_{name}": float(h) for name, h in zip(cfg.classes, hd, strict=True)}
    return out


def evaluate_cases(net: nn.Module, loader, cfg: TaskConfig, device: torch.device) -> dict[str, float]:
    """Mean of each per-case validation metric over a loader of whole cases (batch size 1); NaN-safe for HD95,
    which is undefined where a region is absent from the prediction or the reference."""
    rows = [validate_case(net, b["image"].to(device), b["label"].to(device), cfg) for b in loader]
    if not rows:
        return {}
    return {k: float(np.nanmean([r[k] for r in rows])) if any(np.isfinite(r[k]) for r in rows) else float("nan")
            for k in rows[0]}


def batch_score(logits: torch.Tensor, target: torch.Tensor, cfg: TaskConfig) -> dict[str, float]:
    """What the progress bar shows next to the loss: the mean Dice of the batch."""
    return {"dice": float(batch_dice(logits, target, cfg.sigmoid).mean())}


def build_model(cfg: TaskConfig, name: str | None = None, **overrides) -> nn.Module:
    """The task's default model (or ``name``) for its channels and outputs, from the leanseg model registry."""
    from leanseg.models import create

    # the task's model_kwargs belong to its default model; another model gets its own defaults
    kwargs = (dict(cfg.model_kwargs) if name in (None, cfg.model) else {}) | overrides
    kwargs = {"spatial_dims": cfg.spatial_dims, "in_channels": len(cfg.channels),
              "out_channels": len(cfg.classes)} | kwargs
    net = create(name or cfg.model, **kwargs)
    net.leanseg_spec = (name or cfg.model, kwargs)  # what a checkpoint needs to rebuild it
    return net
