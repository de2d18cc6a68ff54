"""``leanseg bench msd``: networks trained on a real dataset folder (MSD or nnU-Net v2) through the dataset task's
plan, on the same cross-validation folds, at equal epochs or at equal CPU time; Dice per label on each fold's
validation cases (out of fold, through ``leanseg crossval``), weights, seconds per epoch and per predicted case.

Rows: the lean design the plan builds, its dense twin (the same network with dense 3x3x3 convolutions), MONAI's
DynUNet configured as nnU-Net plans the dataset (the plan's depth, nnU-Net's widths 32, 64, ... capped at 320,
stride 1 then 2, deep supervision) and MONAI's UNet at those widths.
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Any


def contenders(plan_kwargs: dict) -> dict[str, dict[str, Any]]:
    """Row name -> dataset-task options (model and model_kwargs); widths are the plan's for every row."""
    features = tuple(plan_kwargs["features"])
    lean = dict(plan_kwargs)
    # nnU-Net's widths at the plan's depth: 32, doubling, capped at 320 (the lean plan halves them)
    nnunet = tuple(min(32 * 2**i, 320) for i in range(len(features)))
    return {
        "LeanUNet (plan)": {"model": "lean_unet", "model_kwargs": lean},
        "LeanUNet x2": {"model": "lean_unet", "model_kwargs": lean | {"features": tuple(2 * f for f in features)}},
        "LeanUNet residual": {"model": "lean_unet", "model_kwargs": lean | {"residual": True}},
        "dense twin": {"model": "lean_unet", "model_kwargs": lean | {"conv": "dense"}},
        "DynUNet (nnU-Net plan)": {"model": "monai_dynunet",
                                   "model_kwargs": {"features": nnunet, "deep_supervision": True}},
        "MONAI UNet": {"model": "monai_unet", "model_kwargs": {"features": nnunet}},
    }


DEFAULT_MODELS = ("LeanUNet (plan)", "dense twin", "DynUNet (nnU-Net plan)", "MONAI UNet")


def step_seconds(task, options: dict, repeats: int = 3) -> float:
    """Seconds of one training step (forward, loss, backward, AdamW) of a row's network at the plan's batch and
    window, on random data: what sets its epochs at equal CPU time."""
    import torch

    from leanseg.training.loop import deep_supervision_loss

    model = task.model(options["model"], **options["model_kwargs"])
    model.train()
    cfg = task.config
    x = torch.randn(cfg.batch_size, len(cfg.channels), *cfg.window)
    target = torch.randint(0, task.label_manager.num_outputs, (cfg.batch_size, 1, *cfg.window))
    loss_fn = task.loss()
    optimizer = torch.optim.AdamW(model.parameters())
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        out = model(x)
        loss = deep_supervision_loss(loss_fn, out, target) if isinstance(out, list) else loss_fn(out, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def run(data: Path, out: Path, folds=(0,), epochs: int | None = 20, minutes: float | None = None,
        models=DEFAULT_MODELS, threads: int | None = None, progress: bool = False, echo=print) -> list[dict]:
    """Train every row on ``folds`` (``epochs`` each, or as many as ``minutes`` of CPU per fold buy at the row's
    measured step time) and score it out of fold; one row per network, echoed as it finishes."""
    import numpy as np
    import torch

    from leanseg.bench import check_counts, check_number
    from leanseg.tasks import prepared_task
    from leanseg.training import TrainConfig, train
    from leanseg.training.crossval import crossval

    check_counts(epochs=epochs, threads=threads)
    if minutes is not None:
        check_number("minutes", minutes, 0.01, 1e6)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    rows = []
    try:
        task, cases = prepared_task("dataset", data, workdir=out, progress=progress)
        table = contenders(task.config.model_kwargs)
        cfg = task.config
        steps = math.ceil(len(cases) * (1 - 1 / 5) * cfg.samples_per_case / cfg.batch_size)
        echo(describe(task, len(cases), folds, epochs, minutes))
        echo(HEADER)
        for name in models:
            options = table[name]
            if minutes is not None:
                n_epochs = max(1, int(minutes * 60 / (steps * step_seconds(task, options))))
            else:
                n_epochs = int(epochs or 1)
            run_dir = out / name.replace(" ", "_").replace("(", "").replace(")", "").replace("-", "")
            seconds, total = [], 0.0
            for fold in folds:
                t0 = time.perf_counter()
                result = train("dataset", data=data, config=TrainConfig(out=run_dir, fold=fold, progress=progress,
                                                                        val_every=n_epochs),
                               epochs=n_epochs, **options)
                total += time.perf_counter() - t0
                seconds.append(result.seconds_per_epoch)
                assert result.model is not None
                weights = sum(p.numel() for p in result.model.parameters())
            cv = crossval(run_dir, data, progress=progress)
            row = {"model": name, "weights": weights, "epochs": n_epochs, **{k[5:]: v for k, v in cv.mean.items()},
                   "mean": float(np.mean(list(cv.mean.values()))), "s_per_epoch": float(np.median(seconds)),
                   "train_min": total / 60 / len(folds), "predict_s": cv.seconds_per_case}
            rows.append(row)
            echo(format_row(row, list(cv.mean)))
    finally:
        torch.set_num_threads(previous)
    return rows


def describe(task, n_cases: int, folds, epochs, minutes) -> str:
    import torch

    name = task.checkpoint_fields().get("dataset", "dataset")
    cfg = task.config
    budget = f"{minutes:g} CPU minutes per fold" if minutes is not None else f"{epochs} epochs"
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"leanseg bench msd: {name}, {n_cases} cases, folds {','.join(map(str, folds))} of "
            f"5 (out-of-fold Dice), {budget}, batch {cfg.batch_size} x {'x'.join(map(str, cfg.window))}, "
            f"AdamW lr {cfg.lr:g} {cfg.schedule}, float32; {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} thread(s), {os.cpu_count()} cores, torch {torch.__version__}; load {load}")


HEADER = (f"{'model':<26}{'weights':>11}{'epochs':>8}{'Dice per label':>28}{'mean':>8}{'s/epoch':>9}"
          f"{'min/fold':>10}{'predict s':>11}")


def format_row(r: dict, names: list[str]) -> str:
    per = " / ".join(f"{r[n[5:]]:.4f}" for n in names)
    return (f"{r['model']:<26}{r['weights']:>11,}{r['epochs']:>8}{per:>28}{r['mean']:>8.4f}{r['s_per_epoch']:>9.1f}"
            f"{r['train_min']:>10.1f}{r['predict_s']:>11.3f}")


__all__ = ["DEFAULT_MODELS", "contenders", "run", "step_seconds"]
