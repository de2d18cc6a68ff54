"""``leanseg train``: train a task of pipelines/ on a data folder or on built-in synthetic cases."""

from __future__ import annotations

from pathlib import Path

import typer

from leanseg.cli.main import app
from leanseg.errors import LeanSegError
from pipelines import describe

_TASKS = "; ".join(f"{name}: {desc}" for name, desc in describe().items())


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise LeanSegError(f"{what} must be integers separated by commas, got {text!r}") from None


@app.command("train")
def train_cmd(
    task: str = typer.Option(..., "--task", "-t", help=f"task to train. {_TASKS}"),
    data: Path = typer.Option(None, "--data", "-d", help="folder of cases (layouts: see data_cards/)"),
    synthetic: int = typer.Option(None, "--synthetic", help="train on N generated cases instead of --data"),
    model: str = typer.Option(None, help="registry model (default: the task's, e.g. lean_unet)"),
    features: str = typer.Option(None, help="model widths per level, e.g. 16,32,64,128"),
    epochs: int = typer.Option(None, help="epochs (default: the task's)"),
    batch_size: int = typer.Option(None, "--batch-size", help="cases per batch (default: the task's)"),
    window: str = typer.Option(None, help="patch size, e.g. 128 or 128,128,96 (default: the task's)"),
    lr: float = typer.Option(None, help="peak AdamW learning rate (default: the task's)"),
    schedule: str = typer.Option(None, help="cosine or poly (default: the task's)"),
    amp: bool = typer.Option(False, "--amp/--no-amp", help="mixed precision (GPU only)"),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 (default: cuda when present)"),
    out: Path = typer.Option(Path("runs/leanseg"), "--out", "-o", help="folder for checkpoints and metrics.csv"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/train_state.safetensors"),
    seed: int = typer.Option(0, help="seed of the split, the data pipeline and the weights"),
    workers: int = typer.Option(0, help="data loader processes"),
):
    """Train a model; writes OUT/best.safetensors and OUT/last.safetensors (read by `leanseg predict`),
    OUT/metrics.csv and OUT/train_state.safetensors (for --resume). Runs DDP under torchrun."""
    from pipelines import get_task

    mod = get_task(task)  # an unknown name fails here, before torch is imported
    options = {"model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr, "schedule": schedule}
    options = {k: v for k, v in options.items() if v is not None}
    dims = mod.Config().spatial_dims
    win = _ints(window, "--window")
    if win is not None:
        options["window"] = win * dims if len(win) == 1 else win
        if len(options["window"]) != dims:
            raise LeanSegError(f"--window needs 1 or {dims} sizes for task {task!r}, got {window!r}")
    if features is not None:
        # only the widths change: the task's other model options (seg2d's down, last_conv) stay
        options["model_kwargs"] = dict(mod.Config().model_kwargs if model in (None, mod.Config().model) else {}) | {
            "features": _ints(features, "--features")}
    if data is not None and not data.exists():
        raise LeanSegError(f"{data}: no such folder")

    from leanseg.training import TrainConfig, train

    config = TrainConfig(out=out, seed=seed, device=device, amp=amp, resume=resume, num_workers=workers)
    result = train(task, data=data, synthetic=synthetic, config=config, **options)
    best = ", ".join(f"{k[4:]} {v:.3f}" for k, v in result.best.items() if k.startswith("val_dice") or
                     k == "val_accuracy")
    typer.echo(f"done: {result.out}/best.safetensors" + (f" ({best})" if best else ""))
