"""``leanseg postprocess-select``: choose component rules on validation predictions, as nnU-Net does."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from leanseg.cli.imports import import_modules, import_option
from leanseg.errors import LeanSegError


def postprocess_select_cmd(
    predictions: Path = typer.Argument(..., help="folder of predicted label maps (NIfTI)"),
    references: Path = typer.Argument(..., help="folder of reference label maps, paired with the predictions by name"),
    model: Path | None = typer.Option(None, "-m", "--model", help="the checkpoint that predicted them (its classes "
                                      "or regions)"),
    task: str | None = typer.Option(None, help="take the classes or regions from this task instead (e.g. brats)"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write a copy of --model with the chosen rules "
                                       "stored in it (its 'postprocess' field)"),
    imports: list[str] | None = import_option(),
):
    """Try each rule per class/region (largest component, size floor, BraTS ET demotion); keep those that raise
    mean Dice; print them as the JSON that --postprocess takes."""
    import_modules(imports)
    from leanseg.postprocess import select_postprocess

    if (model is None) == (task is None):
        raise LeanSegError("give the checkpoint (-m) or a task (--task) that names the classes or regions")
    if output is not None and model is None:
        raise LeanSegError("--output writes a copy of the checkpoint: give it with -m")
    if model is not None:
        from leanseg.checkpoint import read_meta

        labels = read_meta(model).label_manager
    else:
        from leanseg.tasks import get_task

        labels = get_task(str(task)).label_manager
    if output is not None and model is not None:
        from leanseg.io import check_output

        # every file the command reads: the checkpoint and each prediction and reference in their folders
        read = [model] + [p for folder in (predictions, references) if folder.is_dir() for p in folder.iterdir()]
        check_output(output, read)
    rules, scores = select_postprocess(predictions, references, labels)
    typer.echo(f"mean Dice {scores['before']:.4f} -> {scores['after']:.4f}")
    typer.echo(json.dumps(rules.to_json()))
    if output is not None and model is not None:
        from leanseg.checkpoint import load_model, save_model

        net, meta = load_model(model)
        save_model(net, output, meta.replace(postprocess=rules))
        typer.echo(str(output))
