"""``leanseg crossval``: score a cross-validation's folds on their validation cases; choose postprocessing there."""

from __future__ import annotations

from pathlib import Path

import typer

from leanseg.cli.imports import import_modules, import_option
from leanseg.errors import LeanSegError


def crossval_cmd(
    runs: Path = typer.Argument(..., help="the --out folder of `leanseg train --fold K` runs (fold_K/, splits.json)"),
    data: Path = typer.Option(..., "--data", "-d", help="the dataset folder the folds trained on"),
    task: str = typer.Option("dataset", "--task", "-t", help="the task the folds trained (default: dataset)"),
    postprocess: bool = typer.Option(False, "--postprocess/--no-postprocess", help="choose component rules on the "
                                     "out-of-fold predictions and store them in every fold's best.safetensors"),
    tta: bool = typer.Option(False, "--tta/--no-tta", help="average over every mirroring of the axes"),
    ensemble: Path = typer.Option(None, "--ensemble", help="also write the folds as one checkpoint (an 'averaged' "
                                  "model: the mean probability of the folds) at this path"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
    imports: list[str] | None = import_option(),
):
    """Predict each fold's validation cases with that fold's best checkpoint; print Dice per fold and over all
    cases (the CV figure); write RUNS/crossval.json."""
    import_modules(imports)
    from leanseg.training.crossval import crossval, format_crossval

    if not runs.is_dir():
        raise LeanSegError(f"{runs}: no such folder")
    if not data.is_dir():
        raise LeanSegError(f"{data}: no such folder")
    if ensemble is not None:  # before any work, and never onto a checkpoint the command reads
        from leanseg.io import check_output

        check_output(ensemble, sorted(runs.glob("fold_*/*.safetensors")))
    result = crossval(runs, data, task=task, postprocess=postprocess, progress=progress, tta=tta)
    typer.echo(format_crossval(result))
    if ensemble is not None:
        from leanseg.ensemble import average_checkpoints

        folds = [runs / f"fold_{k}" / "best.safetensors" for k in result.folds]
        average_checkpoints(folds, ensemble, crossval={"folds": result.folds, "mean": result.mean})
        typer.echo(f"wrote {ensemble} (the mean of folds {', '.join(map(str, result.folds))})")
