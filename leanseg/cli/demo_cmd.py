"""``leanseg demo``: train a small LeanUNet on easy synthetic BraTS-like phantoms and predict a held-out one."""

from __future__ import annotations

from pathlib import Path

import typer


def demo_cmd(
    out: Path = typer.Option(Path("leanseg_demo"), "--out", "-o", help="folder for the run, NIfTI files and PNG"),
    epochs: int = typer.Option(80, help="training epochs (~1.8 s each on 2 idle CPU cores)"),
    cases: int = typer.Option(20, help="synthetic training + validation cases"),
    seed: int = typer.Option(0, help="seed of the phantoms and the training"),
):
    """A few minutes on the CPU: generate easy phantoms, train, predict a held-out volume, print a Dice table."""
    from leanseg.training.demo import DemoConfig, run_demo

    report = run_demo(out, DemoConfig(cases=cases, epochs=epochs, seed=seed))
    typer.echo(f"{'case':<10}{'WT':>8}{'TC':>8}{'ET':>8}")
    for i, row in enumerate(report["per_case"]):
        typer.echo(f"{f'held-{i}':<10}" + "".join(f"{row[r]:>8.3f}" for r in ("WT", "TC", "ET")))
    typer.echo(f"{'mean':<10}" + "".join(f"{report['mean'][r]:>8.3f}" for r in ("WT", "TC", "ET")))
    typer.echo(f"mean Dice {report['mean_dice']:.3f}; training {report['train_seconds']:.0f} s, "
               f"total {report['total_seconds']:.0f} s")
    typer.echo(f"wrote {out}/heldout_000_pred.nii.gz, {out}/heldout_000_preview.png, {out}/run/best.safetensors")
