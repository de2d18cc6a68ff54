"""``leanseg bench predict``: one BraTS-size case end to end through ``leanseg.predict``, LeanUNet against the rest."""

from __future__ import annotations

import typer


def bench_predict(
    models: str = typer.Option("", help="comma-separated rows (default all: LeanUNet, LeanUNet dense twin, MONAI "
                               "UNet, MONAI SegResNet); the twin and SegResNet take minutes each"),
    repeats: int = typer.Option(1, help="runs per row, each in a fresh process (medians are reported)"),
    threads: int = typer.Option(0, help="torch threads for every row (0: every core)"),
    precision: str = typer.Option("fp32", help="fp32 or bf16, for every row"),
    crop: bool | None = typer.Option(None, "--crop/--no-crop", help="crop to the non-zero box (default: on, as "
                                     "leanseg predict does for zscore-nonzero checkpoints)"),
    synthetic: bool = typer.Option(False, help="a synthetic 4x240x240x155 phantom even when the shared case exists"),
    data: str | None = typer.Option(None, help="another case folder (t1, t1c, t2, flair NIfTI files)"),
    quick: bool = typer.Option(False, help="a synthetic 4x64x64x48 case, 32^3 windows, widths 8-16-32-64 (seconds)"),
    workdir: str | None = typer.Option(None, help="folder for the temporary checkpoints and outputs"),
):
    """Wall time, windows run, network time and peak RSS of a whole-case prediction, each row in its own process."""
    import dataclasses

    from leanseg.bench.predict import QUICK, Setup, run

    setup = dataclasses.replace(QUICK if quick else Setup(), crop=crop, precision=precision, threads=threads)
    run([m.strip() for m in models.split(",") if m.strip()] or None, setup, repeats=repeats,
        synthetic=synthetic or quick, data=data, workdir=workdir)
