"""``leanseg predict``: a thin layer over ``leanseg.predict`` with the same parameter names."""

from __future__ import annotations

from pathlib import Path

import typer

from leanseg.cli.imports import import_modules, import_option
from leanseg.options import MAX_OVERLAP, parse_window, resolve_device
from leanseg.spacing import parse_spacing


def predict_cmd(
    inputs: list[Path] = typer.Argument(..., help="a .nii/.nii.gz file, several NIfTI files (one per channel), a "
                                             "case folder, a SEG-Y cube or an image"),
    model: list[str] | None = typer.Option(None, "-m", "--model", help="checkpoint (.safetensors), zoo name (leanseg "
                                           "models --pretrained), a training run's folder (its best.safetensors) or "
                                           "a cross-validation's (every fold_*); repeat for an ensemble "
                                           "(probabilities averaged); "
                                           "default: the last `leanseg train` model that fits the input, else the "
                                           "zoo's for its kind (SEG-Y: faults)"),
    output: Path | None = typer.Option(None, "-o", "--output", help="label map; the suffix picks the format "
                                       "(.nii.gz, .sgy, .npy, .png); default: beside the input, '<name>_pred'"),
    window: str | None = typer.Option(None, help="window size, '128' or '128,128,96' (default: the checkpoint's)"),
    overlap: float = typer.Option(0.5, help=f"overlap of neighbouring windows, a fraction from 0 to {MAX_OVERLAP}"),
    tta: bool = typer.Option(False, "--tta/--no-tta", help="average over every mirroring of the axes"),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto (cuda when there is one)"),
    amp: bool = typer.Option(False, help="float16 autocast (CUDA only)"),
    probabilities: bool = typer.Option(False, help="also write the probabilities ('<output>_probs')"),
    preview: bool = typer.Option(False, help="also write a PNG of three orthogonal slices with the labels"),
    batch_size: int = typer.Option(1, help="windows per forward pass"),
    slab: int | None = typer.Option(None, help="SEG-Y: inlines written per streaming step"),
    halo: int | None = typer.Option(None, help="SEG-Y: inlines of context read on each side of a slab"),
    postprocess: str | None = typer.Option(None, help='component rules as JSON, e.g. \'{"largest": ["WT"], '
                                           '"demote": {"ET": 500}}\', or \'none\' (default: the checkpoint\'s)'),
    uncertainty: bool = typer.Option(False, help="also write '<output>_uncertainty': std over models and --tta"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    crop: bool | None = typer.Option(None, "--crop/--no-crop", help="predict only the box of non-zero voxels, the "
                                     "rest is background (default: on for checkpoints normalised zscore nonzero)"),
    precision: str = typer.Option("fp32", help="fp32 or bf16 (CPUs with avx512_bf16/amx_bf16, or CUDA)"),
    spacing: str | None = typer.Option(None, help="voxel size in mm to predict at, '1,1,1' or '1' (resampled there "
                                       "and back onto the input's grid), or 'none' (default: the checkpoint's)"),
    imports: list[str] | None = import_option(),
):
    """Segment a volume with a trained checkpoint and write the label map on the input's grid."""
    import_modules(imports)
    from leanseg.prediction import predict  # its device parser is leanseg.options.resolve_device

    # the volume's dimension is known once the input is read: one size goes through as an int, which
    # leanseg.predict repeats on every axis
    sizes = parse_window(window, what="--window") if window is not None else None
    resolve_device(device)  # a bad --device is named as the flag, before any work
    parse_spacing(spacing, what="--spacing")  # likewise a bad --spacing
    chosen = None if not model else model[0] if len(model) == 1 else list(model)
    out = predict(inputs, chosen, output=output,
                  window=sizes[0] if sizes and len(sizes) == 1 else sizes,
                  overlap=overlap, tta=tta, device=device, amp=amp, probabilities=probabilities, preview=preview,
                  batch_size=batch_size, slab=slab, halo=halo, postprocess=postprocess, uncertainty=uncertainty,
                  progress=progress, crop=crop, precision=precision, spacing=spacing)
    typer.echo(str(out))
