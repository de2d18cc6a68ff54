"""``leanseg bench msd``: the lean design against its dense twin, DynUNet as nnU-Net plans it and MONAI UNet on a
real dataset folder, out of fold, at equal epochs or equal CPU time."""

from __future__ import annotations

from pathlib import Path

import typer


def bench_msd(
    data: Path = typer.Option(..., "--data", "-d", help="an MSD or nnU-Net v2 dataset folder (with dataset.json)"),
    folds: str = typer.Option("0", help="folds of the seeded 5-fold split to train and score, e.g. 0 or 0,1,2,3,4"),
    epochs: int = typer.Option(20, help="epochs for every network (equal epochs)"),
    minutes: float = typer.Option(None, help="instead of --epochs: CPU minutes per fold for every network (equal "
                                  "time; each row's epochs from its measured step time)"),
    models: str = typer.Option("", help="comma-separated rows; empty: 'LeanUNet (plan)', 'dense twin', 'DynUNet "
                               "(nnU-Net plan)', 'MONAI UNet' (also 'LeanUNet x2', 'LeanUNet residual')"),
    threads: int = typer.Option(0, help="torch threads (0: torch's default)"),
    out: Path = typer.Option(Path("runs/bench_msd"), help="folder for the runs"),
):
    """Weights, s/epoch, out-of-fold Dice per label and predict seconds per case, one row per network."""
    from leanseg.bench.msd import DEFAULT_MODELS, run
    from leanseg.errors import LeanSegError
    from leanseg.options import at_least, look_up_option

    if not (data / "dataset.json").is_file():
        raise LeanSegError(f"{data}: no dataset.json; bench msd takes an MSD or nnU-Net v2 dataset folder")
    at_least(epochs, 1, "--epochs")
    at_least(threads, 0, "--threads")
    if minutes is not None:
        at_least(minutes, 0.1, "--minutes")
    parts = [x.strip() for x in folds.split(",")]
    if not all(x.isdigit() and int(x) < 5 for x in parts):
        raise LeanSegError(f"--folds {folds!r}: fold numbers from 0 to 4, comma-separated")
    chosen = sorted({int(x) for x in parts})
    names = ["LeanUNet (plan)", "LeanUNet x2", "LeanUNet residual", "dense twin", "DynUNet (nnU-Net plan)",
             "MONAI UNet"]
    rows = [look_up_option(n.strip(), names, what="--models row") for n in models.split(",") if n.strip()]
    run(data, out, folds=chosen, epochs=epochs, minutes=minutes, models=rows or list(DEFAULT_MODELS),
        threads=threads or None, echo=typer.echo)
