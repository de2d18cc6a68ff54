"""``leanseg bench seg2d``: LeanUNet, its dense twin and MONAI's BasicUNet trained on ISBI 2012 EM slices 0-14 and
scored on slices 15-19 at equal epochs and at equal wall-clock (the lean run's training time given to each, converted
to epochs by the ratio of interleaved step times).

Scores come from what users run: ``leanseg.predict`` on the validation PNGs (z-score, sliding window, softmax,
argmax, label values 0/255), then membrane Dice, pixel error and adapted Rand error of the cell interiors
(``leanseg.metrics.boundary_scores``). Each run keeps its ``metrics.csv`` (validation scores per epoch).
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np

VAL_IDS = ("15", "16", "17", "18", "19")
BASIC_FEATURES = (16, 32, 64, 128, 256)  # MONAI BasicUNet 16-256 (the registry's monai_basicunet ends on 16)


def contenders(lean_kwargs: dict | None = None) -> list[tuple[str, dict, object]]:
    """(name, seg2d task options, model builder or None) of the three networks, all from the model registry; the
    lean one is the task's default model unless ``lean_kwargs`` replaces its options."""
    from leanseg.tasks import task_class

    lean = dict(task_class("seg2d").Config().model_kwargs) | (lean_kwargs or {})
    twin = lean | {"conv": "dense"}
    return [("LeanUNet", {"model_kwargs": lean}, None),
            ("LeanUNet dense twin", {"model_kwargs": twin}, None),
            ("MONAI BasicUNet", {"model": "monai_basicunet", "model_kwargs": {"features": BASIC_FEATURES}}, None)]


def flat_epoch(values: list[float], tol: float = 0.01) -> int:
    """The first epoch (1-based) from which every later value stays within ``tol`` of the last one."""
    last = values[-1]
    for i in range(len(values)):
        if all(abs(v - last) <= tol for v in values[i:]):
            return i + 1
    return len(values)


def score_run(data: Path, out: Path, model, picture_id: str = VAL_IDS[0]) -> dict:
    """Scores of ``model`` (the run's last epoch) on the validation slices through ``leanseg.predict``, and a PNG
    image | reference | prediction of one slice."""
    from skimage import io

    import leanseg
    from leanseg.checkpoint import read_meta
    from leanseg.metrics import boundary_scores

    meta = read_meta(out / "last.safetensors")
    (out / "pred").mkdir(exist_ok=True)
    rows, t0 = [], time.perf_counter()
    for case in VAL_IDS:
        pred_path = leanseg.predict(data / "image" / f"{case}.png", (model.eval(), meta),
                                    output=out / "pred" / f"{case}.png", progress=False)
        pred, ref = io.imread(pred_path), io.imread(data / "label" / f"{case}.png")
        rows.append(boundary_scores(pred, ref, boundary=0))
        if case == picture_id:
            image = io.imread(data / "image" / f"{case}.png")
            gap = np.full((image.shape[0], 8), 255, np.uint8)
            io.imsave(out / f"val_{case}.png", np.concatenate([image, gap, ref, gap, pred.astype(np.uint8)], 1),
                      check_contrast=False)
    scores = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return scores | {"predict_s": (time.perf_counter() - t0) / len(VAL_IDS),
                     "picture": str(out / f"val_{picture_id}.png")}


def train_and_score(data: Path, out: Path, name: str, options: dict, build, epochs: int, seed: int = 0,
                    progress: bool = False, val_every: int = 1, **task_options) -> dict:
    """Train one network on slices 0-14 (validating on 15-19 every ``val_every`` epochs) and score its last epoch."""
    from leanseg.training import TrainConfig, train

    t0 = time.perf_counter()
    result = train("seg2d", data=data, config=TrainConfig(out=out, seed=seed, progress=progress,
                                                                val_every=val_every),
                   build_model=build, epochs=epochs, val_ids=VAL_IDS, **options, **task_options)
    train_s = time.perf_counter() - t0
    with (out / "metrics.csv").open(newline="") as f:
        log = list(csv.DictReader(f))
    curve = [float(r["val_boundary_dice"]) for r in log if r.get("val_boundary_dice")]
    seconds = [float(r["seconds"]) for r in log]
    assert result.model is not None  # train() always returns the model it trained
    return {"model": name, "epochs": epochs, "weights": sum(p.numel() for p in result.model.parameters()),
            "s_per_epoch": float(np.median(seconds)), "train_s": float(sum(seconds)), "total_s": train_s,
            "flat_epoch": flat_epoch(curve), "curve": curve} | score_run(data, out, result.model)


def step_seconds(builders: dict, window=(256, 256), batch: int = 4, rounds: int = 5, seed: int = 0,
                 channels: int = 1) -> dict:
    """Median seconds of one training step (forward, Dice+CE loss, backward, AdamW) per network, timed round-robin
    after a warm-up step: on a machine shared with other jobs, interleaving exposes every network to the same load,
    which per-epoch times of runs made minutes apart do not. ``channels``: input channels (4 for BraTS networks);
    the loss is the seg2d task's two-class one whatever the networks' outputs (its time is small next to theirs)."""
    import torch

    from leanseg.tasks import get_task

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *window, generator=gen)
    y = torch.randint(0, 2, (batch, 1, *window), generator=gen)
    loss_fn = get_task("seg2d").loss()
    nets = {name: build() for name, build in builders.items()}
    opts = {name: torch.optim.AdamW(net.parameters()) for name, net in nets.items()}
    times: dict[str, list[float]] = {name: [] for name in nets}
    for r in range(rounds + 1):
        for name, net in nets.items():
            t0 = time.perf_counter()
            loss_fn(net(x), y).backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            if r:  # round 0 is the warm-up
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def run(data: Path, out: Path, epochs: int = 20, seed: int = 0, lean_kwargs: dict | None = None,
        wallclock: bool = True, progress: bool = False, **task_options) -> list[dict]:
    """(a) every network for ``epochs`` epochs; (b) with ``wallclock``, the twin and BasicUNet again for the lean
    run's training time: ``epochs`` times the ratio of their interleaved step times (``step_seconds``), rounded
    down, with their own schedule ending there. Per-epoch times of runs minutes apart on a shared machine differ
    by more than the networks do, so the ratio, not the runs' s/epoch, sets the budget."""
    from leanseg.tasks import get_task

    data, out = Path(data), Path(out)
    task = get_task("seg2d")
    task.configure(task.discover(data))
    cfg = task.config
    contest = contenders(lean_kwargs)
    builders = {name: (lambda o=options: task.model(o.get("model"), **o["model_kwargs"]))
                for name, options, _ in contest}
    steps = step_seconds(builders, cfg.window, cfg.batch_size, seed=seed)
    lean_step = steps[contest[0][0]]
    runs = [(name, options, build, epochs, "equal epochs") for name, options, build in contest]
    if wallclock:
        for name, options, build in contest[1:]:
            n = max(1, math.floor(epochs * lean_step / steps[name]))
            if n < epochs:  # else as fast as the lean network: the equal-epoch run is the equal-time run
                runs.append((name, options, build, n, "equal time"))
    rows = []
    for name, options, build, n, budget in runs:
        folder = out / ("epochs" if budget == "equal epochs" else "time") / name.replace(" ", "_")
        row = train_and_score(data, folder, name, options, build, n, seed, progress, **task_options)
        rows.append(row | {"budget": budget, "s_per_step": steps[name]})
        print(format_row(rows[-1]), flush=True)
    return rows


HEADER = (f"{'model':<22}{'budget':<14}{'epochs':>7}{'weights':>11}{'s/epoch':>9}{'s/step':>8}{'Dice':>8}"
          f"{'pix err':>9}{'Rand err':>10}{'flat@':>7}")


def format_row(r: dict) -> str:
    return (f"{r['model']:<22}{r['budget']:<14}{r['epochs']:>7}{r['weights']:>11,}{r['s_per_epoch']:>9.1f}"
            f"{r.get('s_per_step', float('nan')):>8.2f}{r['boundary_dice']:>8.3f}{r['pixel_error']:>9.3f}"
            f"{r['rand_error']:>10.3f}{r['flat_epoch']:>7}")
