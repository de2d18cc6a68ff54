"""``leanseg predict``: a thin layer over ``leanseg.predict`` with the same parameter names."""

from __future__ import annotations

from pathlib import Path

import typer

from leanseg.cli.main import app
from leanseg.errors import LeanSegError


def parse_window(window: str | None) -> int | tuple[int, ...] | None:
    """'128' -> 128, '128,128,96' -> (128, 128, 96)."""
    if window is None:
        return None
    try:
        sizes = tuple(int(w) for w in window.split(","))
    except ValueError:
        raise LeanSegError(f"--window {window!r}: expected an integer or comma-separated integers") from None
    if min(sizes) < 1:
        raise LeanSegError(f"--window {window!r}: sizes must be positive")
    return sizes[0] if len(sizes) == 1 else sizes


@app.command("predict")
def predict_cmd(
    inputs: list[Path] = typer.Argument(..., help="a .nii/.nii.gz file, several NIfTI files (one per channel), a "
                                             "case folder, a SEG-Y cube or an image"),
    model: str | None = typer.Option(None, "-m", "--model", help="checkpoint (.safetensors) or zoo name (leanseg "
                                     "models --pretrained); default: the last `leanseg train` model that fits the "
                                     "input, else the zoo's for its kind (SEG-Y: faults)"),
    output: Path | None = typer.Option(None, "-o", "--output", help="label map; the suffix picks the format "
                                       "(.nii.gz, .sgy, .npy, .png); default: beside the input, '<name>_pred'"),
    window: str | None = typer.Option(None, help="window size, '128' or '128,128,96' (default: the checkpoint's)"),
    overlap: float = typer.Option(0.5, help="overlap of neighbouring windows, 0 to <1"),
    tta: bool = typer.Option(False, "--tta/--no-tta", help="average over every mirroring of the axes"),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto"),
    amp: bool = typer.Option(False, help="float16 autocast (CUDA only)"),
    probabilities: bool = typer.Option(False, help="also write the probabilities ('<output>_probs')"),
    preview: bool = typer.Option(False, help="also write a PNG of three orthogonal slices with the labels"),
    batch_size: int = typer.Option(1, help="windows per forward pass"),
    slab: int | None = typer.Option(None, help="SEG-Y: inlines written per streaming step"),
    halo: int | None = typer.Option(None, help="SEG-Y: inlines of context read on each side of a slab"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
):
    """Segment a volume with a trained checkpoint and write the label map on the input's grid."""
    from leanseg.prediction import predict

    out = predict(inputs, model, output=output, window=parse_window(window), overlap=overlap, tta=tta,
                  device=device, amp=amp, probabilities=probabilities, preview=preview, batch_size=batch_size,
                  slab=slab, halo=halo, progress=progress)
    typer.echo(str(out))
