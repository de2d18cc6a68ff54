"""``leanseg bench brats``: LeanUNet vs its dense twin vs MONAI's UNet on synthetic BraTS, equal data and budget."""

from __future__ import annotations

from pathlib import Path

import typer


def bench_brats(
    cases: int = typer.Option(16, help="synthetic cases (a fifth is held out for validation)"),
    epochs: int = typer.Option(20, help="epochs for every model"),
    size: int = typer.Option(48, help="phantom edge; also the training window"),
    features: str = typer.Option("8,16,32,64", help="widths per level, the same for all three models"),
    out: Path = typer.Option(Path("runs/bench_brats"), help="folder for the three runs"),
    seed: int = typer.Option(0, help="seed of the data and the weights"),
):
    """Dice per region (validation phantoms), weights and seconds per epoch on the CPU."""
    from leanseg.bench.brats import HEADER, run
    from leanseg.options import at_least, parse_ints

    for value, what, minimum in ((cases, "--cases", 2), (epochs, "--epochs", 1), (size, "--size", 16)):
        at_least(value, minimum, what)
    widths = parse_ints(features, "--features")
    typer.echo(HEADER)
    run(out, cases=cases, epochs=epochs, size=size, features=widths, seed=seed)
