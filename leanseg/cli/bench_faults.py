"""``leanseg bench faults``: LeanUNet vs its dense twin vs FaultSeg3D's U-Net on synthetic fault cubes."""

from __future__ import annotations

from pathlib import Path

import typer


def bench_faults(
    cases: int = typer.Option(12, help="generated training cubes (a tenth is held out for validation)"),
    epochs: int = typer.Option(2, help="epochs for every model"),
    size: int = typer.Option(32, help="cube edge; also the training window (64 or 128 for real comparisons)"),
    heldout: int = typer.Option(4, help="held-out cubes scored (seeds the training never drew)"),
    segy: Path | None = typer.Option(None, help="a real SEG-Y cube to report the fault fraction on "
                                     "(default: the shared F3 crop when present)"),
    models: str = typer.Option("lean,dense,faultseg3d", help="comma-separated subset of lean, dense, faultseg3d, "
                               "lean-d1 (dense finest level, max-pool down), dense-d1 (its twin)"),
    out: Path = typer.Option(Path("runs/bench_faults"), help="folder for the runs"),
    seed: int = typer.Option(0, help="seed of the data and the weights"),
):
    """Weights, s/epoch, held-out fault F1 at 1-voxel tolerance and the real cube's fault fraction, equal budgets.
    The defaults finish in a few minutes on 2 CPU cores and only show that it runs: raise --cases, --epochs, --size."""
    from leanseg.bench.faults import CONTENDERS, HEADER, run
    from leanseg.errors import LeanSegError
    from leanseg.options import at_least

    for value, what, minimum in ((cases, "--cases", 2), (epochs, "--epochs", 1), (size, "--size", 16),
                                 (heldout, "--heldout", 1)):
        at_least(value, minimum, what)

    chosen = tuple(m.strip() for m in models.split(",") if m.strip())
    unknown = [m for m in chosen if m not in CONTENDERS]
    if unknown:
        raise LeanSegError(f"--models: unknown {unknown[0]!r}; choose from {', '.join(CONTENDERS)}")
    typer.echo(HEADER)
    run(out, cases=cases, epochs=epochs, size=size, heldout=heldout, seed=seed, segy=segy, models=chosen)
