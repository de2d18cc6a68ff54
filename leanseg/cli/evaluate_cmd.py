"""``leanseg evaluate``: Dice and HD95 per class or region, as a table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from leanseg.errors import LeanSegError


def _json_option(text: str | None, name: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise LeanSegError(f"--{name}: not JSON ({err.msg})") from None
    if not isinstance(value, dict):
        raise LeanSegError(f"--{name}: expected a JSON object")
    return value


def evaluate_cmd(
    prediction: Path = typer.Argument(..., help="predicted label map"),
    reference: Path = typer.Argument(..., help="reference label map on the same grid"),
    task: str | None = typer.Option(None, help="take the classes or regions from this task (e.g. brats)"),
    model: Path | None = typer.Option(None, "-m", "--model", help="take the classes or regions from a checkpoint"),
    labels: str | None = typer.Option(None, help='classes as JSON, e.g. \'{"edema": 2, "tumour": 4}\''),
    regions: str | None = typer.Option(None, help='regions as JSON, e.g. \'{"WT": [1, 2, 4], "ET": [4]}\''),
    json_path: Path | None = typer.Option(None, "--json", help="also write the scores as JSON here ('-': stdout)"),
):
    """Dice and HD95 (MONAI) per class or region; default: every non-zero label value present."""
    from leanseg.io import atomic_path, check_output
    from leanseg.labels import LabelManager
    from leanseg.metrics import evaluate, format_table

    if json_path is not None and str(json_path) != "-":  # before any work, and never onto a file this command reads
        check_output(json_path, [prediction, reference, *([model] if model is not None else [])])

    given = {"labels": _json_option(labels, "labels"), "regions": _json_option(regions, "regions")}
    manager = LabelManager(**{k: v for k, v in given.items() if v}) if any(given.values()) else None
    if task is not None:
        from leanseg.tasks import get_task

        manager = get_task(task).label_manager
    if model is not None:
        from leanseg.checkpoint import read_meta

        manager = read_meta(model).label_manager
    scores = evaluate(prediction, reference, labels=manager)
    typer.echo(format_table(scores))
    if json_path is not None:
        text = json.dumps({"prediction": str(prediction), "reference": str(reference), "scores": scores}, indent=2)
        if str(json_path) == "-":
            typer.echo(text)
        else:
            with atomic_path(json_path) as tmp:
                tmp.write_text(text + "\n")
