"""``leanseg train``: train a registered task (leanseg.tasks) on a data folder or on built-in synthetic cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from leanseg.cli._help import LeanCommand
from leanseg.cli.imports import import_modules, import_option
from leanseg.errors import LeanSegError
from leanseg.options import Schedule, look_up_option, parse_ints, parse_window, resolve_device
from leanseg.tasks import describe

_TASKS = "; ".join(f"{name}: {desc}" for name, desc in describe().items())


def task_defaults() -> str:
    """The defaults each task trains with, for the end of ``leanseg train --help`` (read from the tasks' configs
    when the help is shown, so they cannot drift from the code)."""
    from leanseg.tasks import task_class

    lines = ["Task defaults (a flag replaces one):"]
    for name in describe():
        try:
            cfg = task_class(name).Config()
        except Exception as err:  # a third-party task that does not import: say so, list the others
            lines.append(f"{name}: cannot be imported ({type(err).__name__})")
            continue
        if cfg.epochs is None:  # the dataset task
            lines.append(f"{name}: planned from the data's fingerprint, printed before training and written to "
                         "OUT/plan.json (--plan overrides it)")
            continue
        window = "x".join(map(str, cfg.window))
        lines.append(f"{name}: {cfg.epochs} epochs, batch {cfg.batch_size}, window {window}, lr {cfg.lr:g} "
                     f"({cfg.schedule}), model {cfg.model}, spacing {_spacing(cfg.spacing)}")
    return "\n\n".join(lines)


def _spacing(spacing) -> str:
    if spacing is None:
        return "none"
    return spacing if isinstance(spacing, str) else ",".join(f"{s:g}" for s in spacing)


class TrainCommand(LeanCommand):
    """``leanseg train``, whose help ends with the task defaults, read when the help is shown."""

    @property
    def epilog(self) -> str:
        return task_defaults()

    @epilog.setter
    def epilog(self, value) -> None:
        pass  # typer sets none; the property is the epilog


MAX_WIDTH = 4096  # channels per level; nnU-Net caps 3D widths at 320, and wider is a typo, not a design


def train_cmd(
    task: str = typer.Option(None, "--task", "-t", help=f"task to train (default: dataset when --data holds a "
                             f"dataset.json). {_TASKS}"),
    data: Path = typer.Option(None, "--data", "-d", help="folder of cases: an MSD or nnU-Net v2 dataset (with its "
                              "dataset.json) needs no --task; other layouts need --task, and each task's module "
                              "describes the layout it reads (python -m pydoc pipelines.brats)"),
    synthetic: int = typer.Option(None, "--synthetic", help="train on N generated cases instead of --data"),
    model: str = typer.Option(None, help="registry model, see `leanseg models`; yours with --import (default: the "
                              "task's, listed below)"),
    features: str = typer.Option(None, help="model widths per level, e.g. 16,32,64,128"),
    epochs: int = typer.Option(None, help="epochs (default: the task's, listed below)"),
    batch_size: int = typer.Option(None, "--batch-size", help="cases per batch (default: the task's, listed below)"),
    window: str = typer.Option(None, help="patch size, e.g. 128 or 128,128,96 (default: the task's, listed below)"),
    lr: float = typer.Option(None, help="peak AdamW learning rate (default: the task's, listed below)"),
    schedule: str = typer.Option(None, help="cosine or poly (default: the task's, listed below)"),
    amp: bool = typer.Option(False, "--amp/--no-amp", help="mixed precision (GPU only)"),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto (cuda when there is one)"),
    out: Path = typer.Option(Path("runs/leanseg"), "--out", "-o", help="folder for checkpoints and metrics.csv"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/train_state.safetensors"),
    seed: int = typer.Option(0, help="seed of the split, the data pipeline and the weights"),
    workers: int = typer.Option(0, help="data loader processes"),
    postprocess: bool = typer.Option(False, "--postprocess/--no-postprocess", help="at the end, choose component "
                                     "rules on the validation cases (as nnU-Net does) and store them in best"),
    spacing: str = typer.Option(None, help="voxel size in mm cases are resampled to and the checkpoint records: "
                                "'1,1,1', 'median' (of the cases) or 'none' (default: the task's; brats: median)"),
    fold: str = typer.Option(None, "--fold", "-f", help="cross-validation fold 0-4 (a seeded 5-fold split in "
                             "OUT/splits.json, made once, reused) or 'all' (every case trains); the run goes to "
                             "OUT/fold_K"),
    val_every: int = typer.Option(1, "--val-every", help="epochs between validations on the held-out cases (the last "
                                  "epoch always validates)"),
    keep_last: bool = typer.Option(False, "--keep-last", help="best.safetensors is the final epoch, not the best "
                                   "validated one (for cross-validation: no choice made on the validation cases)"),
    plan: Path = typer.Option(None, "--plan", help="dataset task: a plan.json whose fields replace the planned "
                              "ones (any subset; flags win over it)"),
    imports: list[str] | None = import_option(),
):
    """Train a model; writes OUT/best.safetensors and OUT/last.safetensors (read by `leanseg predict`),
    OUT/metrics.csv and OUT/train_state.safetensors (for --resume). Runs DDP under torchrun."""
    from leanseg.tasks import task_class

    import_modules(imports)

    if task is None:
        if data is None or not (data / "dataset.json").is_file():
            where = f"{data} has no dataset.json" if data is not None else "no --data given"
            raise LeanSegError(f"give --task ({', '.join(describe())}); {where}, so it is not a dataset folder")
        task = "dataset"
    cls = task_class(task)  # an unknown name fails here
    if schedule is not None:
        schedule = look_up_option(schedule, Schedule, what="schedule").value
    options: dict[str, Any] = {"model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                               "schedule": schedule}
    options = {k: v for k, v in options.items() if v is not None}
    if window is not None:
        options["window"] = parse_window(window, cls.Config().spatial_dims, what="--window")
    if features is not None:
        # only the widths change: the task's other model options (seg2d's down, dense_levels) stay
        defaults = cls.Config()
        widths = parse_ints(features, "--features")
        if any(w < 1 or w > MAX_WIDTH for w in widths):
            raise LeanSegError(f"--features must be widths from 1 to {MAX_WIDTH}, got {features}")
        kwargs = dict((defaults.model_kwargs or {}) if model in (None, defaults.model) else {}) | {"features": widths}
        if isinstance(kwargs.get("dense_levels"), int):  # fewer levels than the task's dense ones: all of them dense
            kwargs["dense_levels"] = min(kwargs["dense_levels"], len(widths))
        options["model_kwargs"] = kwargs
    if spacing is not None:
        from leanseg.spacing import parse_spacing

        median = spacing.strip().lower() == "median"
        options["spacing"] = "median" if median else parse_spacing(spacing, cls.Config().spatial_dims,
                                                                   what="--spacing")
    if data is not None and not data.exists():
        raise LeanSegError(f"{data}: no such folder")
    if val_every < 1:
        raise LeanSegError(f"--val-every must be at least 1, got {val_every}")
    if plan is not None:
        if task != "dataset":
            raise LeanSegError(f"--plan is for the dataset task (a folder with a dataset.json), not {task}")
        if not plan.is_file():
            raise LeanSegError(f"{plan}: no such plan file")
        options["plan"] = plan
    chosen_fold = None
    if fold is not None:
        from leanseg.training.loop import check_fold

        chosen_fold = check_fold(fold)
    chosen = resolve_device(device)  # a bad --device fails here, before torch loads the data
    # auto: TrainConfig picks the device, cuda:LOCAL_RANK under torchrun
    train_device = None if device.strip().lower() == "auto" else str(chosen)

    from leanseg.training import TrainConfig, train

    config = TrainConfig(out=out, seed=seed, device=train_device, amp=amp, resume=resume, num_workers=workers,
                         postprocess=postprocess, fold=chosen_fold, val_every=val_every,
                         keep_last=keep_last)
    result = train(task, data=data, synthetic=synthetic, config=config, **options)
    best = ", ".join(f"{k[4:]} {v:.3f}" for k, v in result.best.items() if k.startswith("val_dice") or
                     k == "val_accuracy")
    typer.echo(f"done: {result.out}/best.safetensors" + (f" ({best})" if best else ""))
    if result.postprocess:
        typer.echo(f"postprocess {result.postprocess['postprocess']}: mean Dice {result.postprocess['before']:.4f} "
                   f"-> {result.postprocess['after']:.4f}")
