"""``leanseg bench brats``: LeanUNet vs its dense twin vs MONAI's UNet and SegResNet on synthetic BraTS (the hard
phantoms by default), equal data and budget."""

from __future__ import annotations

from pathlib import Path

import typer


def bench_brats(
    cases: int = typer.Option(32, help="synthetic cases (a quarter is held out for validation)"),
    epochs: int = typer.Option(30, help="epochs for every model"),
    size: int = typer.Option(48, help="phantom edge; also the training window"),
    features: str = typer.Option("8,16,32,64", help="widths per level, the same for every model"),
    hard: bool = typer.Option(True, "--hard/--easy", help="the hard phantoms, or the demo's easy ones"),
    models: str = typer.Option("", help="comma-separated rows to run; empty: LeanUNet, LeanUNet x2 residual, "
                               "LeanUNet dense twin, MONAI UNet, MONAI SegResNet (also: 'LeanUNet maxpool+dense last', "
                               "'twin maxpool', 'LeanUNet maxpool', 'LeanUNet dense last', 'LeanUNet dense 1 level', "
                               "'LeanUNet dense 2 levels', 'LeanUNet x2', 'LeanUNet x4', 'LeanUNet residual', "
                               "'LeanUNet EM design', 'LeanUNet EM design 2 dense')"),
    test_cases: int = typer.Option(24, help="further phantoms (another seed) every network is scored on; 0: score "
                                   "on the validation cases"),
    threads: int = typer.Option(0, help="torch threads (0: torch's default); 1 is faster on a shared machine"),
    out: Path = typer.Option(Path("runs/bench_brats"), help="folder for the runs"),
    seed: int = typer.Option(0, help="seed of the data and the weights"),
):
    """Dice per region (validation phantoms, through the predict path), weights and seconds per epoch on the CPU."""
    from leanseg.bench.brats import DEFAULT_MODELS, contenders, run
    from leanseg.options import at_least, look_up_option, parse_ints

    for value, what, minimum in ((cases, "--cases", 2), (epochs, "--epochs", 1), (size, "--size", 16),
                                 (threads, "--threads", 0), (test_cases, "--test-cases", 0)):
        at_least(value, minimum, what)
    widths = parse_ints(features, "--features")
    known = list(contenders(widths))
    rows = [look_up_option(name.strip(), known, what="--models row") for name in models.split(",") if name.strip()]
    rows = rows or list(DEFAULT_MODELS)
    run(out, cases=cases, epochs=epochs, size=size, features=widths, seed=seed, hard=hard, models=rows,
        threads=threads or None, test_cases=test_cases, echo=typer.echo)

