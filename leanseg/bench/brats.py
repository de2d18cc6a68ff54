"""``leanseg bench brats``: LeanUNet, a wider residual LeanUNet, its dense twin, MONAI's UNet and SegResNet (and more
lean variants on request) trained on the same synthetic BraTS-like cases with the same budget (cases, transforms,
optimiser, schedule, epochs, seed); Dice per region on further test cases of another seed (or the validation
cases), predicted through the predict path (``Task.validate_case``), weights, seconds per epoch.

The phantoms are the hard ones by default (``leanseg.synthetic.BratsGeology``: brain anatomy, overlapping
intensities, multifocal irregular lesions, bias fields, thick slices, scanner contrast); ``hard=False`` gives the
demo's easy phantoms, on which every network scores 0.97-0.99.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

REGIONS = ("WT", "TC", "ET")


def contenders(features: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Name -> brats task options of every network, all built through the model registry at the same widths:
    LeanUNet's levels, MONAI UNet's channels (strided, two residual units per level, the registry's default) and
    SegResNet's init_filters (its widths double per level, so init_filters = features[0] gives the same ones)."""
    feats = tuple(features)
    lean = {"features": feats, "conv": "lean", "down": "conv", "last_conv": None}  # the task's 3D design
    em = {"down": "maxpool", "last_conv": "dense"}  # the seg2d ablations' winners (CHANGELOG, 0.1.0)
    em2026 = {"down": "maxpool", "up": "transpose"}  # with residual=False (the lean default) and dense levels
    return {
        "LeanUNet": {"model_kwargs": lean},
        "LeanUNet dense twin": {"model_kwargs": lean | {"conv": "dense"}},
        "LeanUNet maxpool+dense last": {"model_kwargs": lean | em},
        "twin maxpool": {"model_kwargs": lean | em | {"conv": "dense"}},
        "LeanUNet maxpool": {"model_kwargs": lean | {"down": "maxpool"}},  # the two changes one at a time
        "LeanUNet dense last": {"model_kwargs": lean | {"last_conv": "dense"}},
        # the seg2d default's change carried to 3D: the finest levels dense, where channels are few
        "LeanUNet dense 1 level": {"model_kwargs": lean | {"dense_levels": 1}},
        "LeanUNet dense 2 levels": {"model_kwargs": lean | {"dense_levels": 2}},
        # weights saved buy width: twice the widths (about 4x the weights) and four times (about MONAI UNet's)
        "LeanUNet x2": {"model_kwargs": lean | {"features": tuple(2 * f for f in feats)}},
        "LeanUNet x4": {"model_kwargs": lean | {"features": tuple(4 * f for f in feats)}},
        # the paper's residual lean blocks (the seg2d ablations' latest winner)
        "LeanUNet residual": {"model_kwargs": lean | {"residual": True}},
        "LeanUNet x2 residual": {"model_kwargs": lean | {"features": tuple(2 * f for f in feats), "residual": True}},
        # the seg2d default of 2026-12-04 carried to 3D: plain lean levels, dense 3x3x3s in the three finest levels,
        # max pooling down, transposed convs up; and with two dense levels, within a quarter of the twin's weights
        # (in 3D a dense conv has 27 taps against the lean 7)
        "LeanUNet EM design": {"model_kwargs": lean | em2026 | {"dense_levels": min(3, len(feats))}},
        "LeanUNet EM design 2 dense": {"model_kwargs": lean | em2026 | {"dense_levels": min(2, len(feats))}},
        "MONAI UNet": {"model": "monai_unet", "model_kwargs": {"features": feats}},
        "MONAI SegResNet": {"model": "monai_segresnet", "model_kwargs": {"init_filters": feats[0]}},
    }


# the lean design at the bench's widths, the 3D winner of docs/benchmarks.md's table (twice the widths, residual blocks,
# still 1/4 of the twin's weights), the twin and MONAI's two
DEFAULT_MODELS = ("LeanUNet", "LeanUNet x2 residual", "LeanUNet dense twin", "MONAI UNet", "MONAI SegResNet")


def run(out: Path, cases: int = 32, epochs: int = 30, size: int = 48, features=(8, 16, 32, 64), seed: int = 0,
        hard: bool = True, models=DEFAULT_MODELS, threads: int | None = None, val_fraction: float = 0.25,
        test_cases: int = 0, progress: bool = False, echo=print) -> list[dict]:
    """Train every network in ``models`` on the same ``cases`` phantoms (``val_fraction`` held out) and score it;
    one row per network, echoed as it finishes. With ``test_cases``, the scores are those of that many further
    phantoms drawn from another seed (prediction is cheap next to training: more cases, less noise in the ranking);
    without, of the validation cases."""
    import torch

    from leanseg.bench import check_counts, check_number
    from leanseg.training import TrainConfig, train

    check_counts(cases=cases, epochs=epochs, size=size, features=list(features), threads=threads)
    check_counts(0, test_cases=test_cases)
    check_number("val_fraction", val_fraction, 0.0, 0.9)
    table = contenders(tuple(features))
    common: dict[str, Any] = dict(epochs=epochs, window=(size,) * 3, synthetic_size=size, batch_size=2,
                                  samples_per_case=1, lr=5e-3, hd95=False, hard_phantoms=hard,
                                  val_fraction=val_fraction)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)  # one thread is faster than two when other jobs share the cores
    rows = []
    try:
        echo(describe(cases, epochs, size, features, hard, val_fraction, test_cases))
        scored = scored_cases(cases, seed, test_cases, common)  # drawn once for every row
        echo(HEADER)
        for name in models:
            t0 = time.perf_counter()
            result = train("brats", synthetic=cases, config=TrainConfig(out=Path(out) / name.replace(" ", "_"),
                                                                        seed=seed, progress=progress,
                                                                        val_every=epochs),
                           **common, **table[name])
            assert result.model is not None  # train() always returns the model it trained
            weights = sum(p.numel() for p in result.model.parameters())
            rows.append({"model": name, "weights": weights,
                         **score(result.model, scored, common),
                         "s_per_epoch": result.seconds_per_epoch, "total_s": time.perf_counter() - t0})
            echo(format_row(rows[-1]))
    finally:
        torch.set_num_threads(previous)
    return rows


def scored_cases(cases: int, seed: int, test_cases: int, options: dict) -> list[dict]:
    """The cases a row is scored on: ``test_cases`` phantoms seeded (seed + 1, i), never trained or validated on,
    or else the validation cases of ``train`` (the same split)."""
    from leanseg.tasks import get_task
    from leanseg.training.loop import split_cases

    task = get_task("brats", **options)
    if test_cases:
        return task.synthetic(test_cases, seed + 1)
    return split_cases(task.synthetic(cases, seed), task.config.val_fraction, seed)[1]


def score(model, cases: list[dict], options: dict) -> dict:
    """Mean Dice per region over ``cases``, through the predict path of ``train``'s validation
    (``Task.validate_case``), and ET split by whether the case has ET: on a case without it, Dice is 1 for an empty
    prediction and 0 for a single false voxel (the BraTS convention), so a few such cases can swing the ET mean by
    more than the networks differ on the others. ``et_present`` is the mean ET Dice over cases with ET,
    ``no_et_right`` how many of the ``no_et`` cases without ET got an empty ET."""
    import numpy as np
    import torch

    from leanseg.tasks import get_task

    task = get_task("brats", **options)
    transform = task.transforms(train=False)
    dice: dict[str, list[float]] = {r: [] for r in REGIONS}
    present: list[float] = []
    absent: list[float] = []
    model.eval()
    with torch.no_grad():
        for case in cases:
            d = transform(case)
            scores = task.validate_case(model, d["image"][None], d["label"][None], torch.device("cpu"))
            for r in REGIONS:
                dice[r].append(scores[f"dice_{r}"])
            (present if (case["label"] == 4).any() else absent).append(scores["dice_ET"])
    means = {r: float(np.mean(v)) for r, v in dice.items()}
    return {**means, "mean": sum(means.values()) / len(means),
            "et_present": float(np.mean(present)) if present else float("nan"),
            "no_et_right": int(sum(d == 1.0 for d in absent)), "no_et": len(absent)}


def describe(cases: int, epochs: int, size: int, features, hard: bool, val_fraction: float,
             test_cases: int = 0) -> str:
    """One line: the data, the budget and the machine (with its load average, since other jobs share it)."""
    import torch

    n_val = max(1, round(val_fraction * cases))
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    scored = f"scored on {test_cases} test cases" if test_cases else "scored on the validation cases"
    return (f"leanseg bench brats: {'hard' if hard else 'easy'} phantoms {size}^3, {cases - n_val} training + "
            f"{n_val} validation cases ({scored}), {epochs} epochs, batch 2, window {size}^3, AdamW lr 5e-3 cosine, "
            f"widths {'-'.join(map(str, features))}, float32; {platform.machine()}, "
            f"{torch.get_num_threads()} thread(s), {os.cpu_count()} cores, torch {torch.__version__}; "
            f"load average {load}")


HEADER = (f"{'model':<30}{'weights':>10}{'WT':>8}{'TC':>8}{'ET':>8}{'mean':>8}{'s/epoch':>10}"
          f"{'ET where present':>18}{'no ET, empty':>14}")


def format_row(r: dict) -> str:
    empty = f"{r['no_et_right']}/{r['no_et']}"
    return (f"{r['model']:<30}{r['weights']:>10,}{r['WT']:>8.3f}{r['TC']:>8.3f}{r['ET']:>8.3f}{r['mean']:>8.3f}"
            f"{r['s_per_epoch']:>10.1f}{r['et_present']:>18.3f}{empty:>14}")
