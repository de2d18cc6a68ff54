"""Pieces several tasks share: seeded synthetic cases, missing-file errors, losses.

The task interface itself (``Task``, ``TaskConfig``, validation, model building) is ``leanseg.tasks``; files are
read through ``leanseg.io`` and labels mapped by ``leanseg.labels.LabelManager``, as in prediction.
"""

from __future__ import annotations

import numpy as np

from leanseg.errors import LeanSegError


def seeded_cases(make, n: int, seed: int, size: int, prefix: str, **extra) -> list[dict]:
    """``n`` generated cases ``{"id", "image", "label", **extra}``; case i is ``make(rng, size)`` with the generator
    seeded by (seed, i), so a synthetic data set is a function of its seed."""
    cases = []
    for i in range(n):
        image, label = make(np.random.default_rng([seed, i]), size)
        cases.append({"id": f"{prefix}_{i:03d}", "image": image, "label": label, **extra})
    return cases


def missing_error(what: str, root, missing: list[str]) -> LeanSegError:
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    return LeanSegError(f"{root}: {len(missing)} {what} missing: {shown}")


def dice_bce_loss(pos_weight: float | None = None):
    """Dice + BCE on sigmoid outputs. MONAI's DiceCELoss switches to softmax CE when there are several channels,
    which is wrong for overlapping regions, so the two MONAI/torch pieces are summed here."""
    import torch
    from monai.losses import DiceLoss

    class DiceBCELoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)

        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            target = target.float()
            pw = None if pos_weight is None else logits.new_tensor(pos_weight)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
            return self.dice(logits, target) + bce

    return DiceBCELoss()


def softmax_dice_ce():
    """Dice + cross-entropy over softmax classes; the target is a (N, 1, ...) class-index map."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)
