"""The faults task's loss: its weighted BCE puts the 0.5 threshold at a fault posterior of 1 / (1 + w)."""

import math

import pytest
import torch

from pipelines.faults import balanced_loss


@pytest.mark.parametrize("weight", [1.0, 4.0, 30.0])
def test_bce_optimum_is_one_half_at_the_weighted_posterior(weight):
    """Identical voxels of which a fraction q = 1 / (1 + w) are faults: the BCE part of the loss (the loss less its
    Dice part) is lowest where every logit is 0, sigmoid 0.5; a model that cannot tell them apart marks them all
    as fault above that fraction and none below it. Checked against the closed form w q = (1 - q)."""
    loss_fn = balanced_loss(weight)
    n = 3000
    q = 1 / (1 + weight)
    target = torch.zeros(1, 1, n)
    target[..., : round(q * n)] = 1

    def bce(z: float) -> float:
        logits = torch.full_like(target, z)
        return float(loss_fn(logits, target) - loss_fn.dice(logits, target))

    grid = [k / 20 for k in range(-60, 61)]
    best = min(grid, key=bce)
    expected = math.log(weight * (round(q * n) / n) / (1 - round(q * n) / n))  # ~0 up to the rounding of q * n
    assert abs(best - expected) <= 0.05 + 1e-9
    assert bce(best) < bce(best + 1) and bce(best) < bce(best - 1)
