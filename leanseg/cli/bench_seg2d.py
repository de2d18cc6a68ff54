"""``leanseg bench seg2d``: LeanUNet vs its dense twin vs MONAI BasicUNet on ISBI 2012 EM slices (train 0-14,
validate 15-19) at equal epochs and equal wall-clock."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def bench_seg2d(
    data: Path = typer.Option(Path("../shared/data/images2d/isbi2012_em_membrane"),
                              help="folder with image/ and label/ holding ISBI slices 0.png..19.png"),
    epochs: int = typer.Option(20, help="epochs of the equal-epoch runs (the lean run's time sets the other budget)"),
    out: Path = typer.Option(Path("runs/bench_seg2d"), help="folder for the runs, pictures and table"),
    seed: int = typer.Option(0, help="seed of the data pipeline and the weights"),
    wallclock: bool = typer.Option(True, help="also train the twin and BasicUNet for the lean run's time"),
    threads: int = typer.Option(0, help="torch CPU threads (0: torch's default)"),
):
    """Weights, s/epoch, membrane Dice, pixel error and adapted Rand error on slices 15-19; one picture per run."""
    from leanseg.bench.seg2d import HEADER, VAL_IDS, run
    from leanseg.errors import LeanSegError
    from leanseg.options import at_least

    at_least(epochs, 1, "--epochs")
    at_least(threads, 0, "--threads")
    missing = [f"{sub}/{i}.png" for sub in ("image", "label") for i in (*range(15), *VAL_IDS)
               if not (data / sub / f"{i}.png").is_file()]
    if missing:
        raise LeanSegError(f"{data}: {len(missing)} ISBI slices missing ({', '.join(missing[:3])}...)")
    if threads:
        import torch

        torch.set_num_threads(threads)
    typer.echo(HEADER)
    rows = run(data, out, epochs=epochs, seed=seed, wallclock=wallclock)
    tmp = out / ".bench.json.tmp"  # written whole, then renamed
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(out / "bench.json")


