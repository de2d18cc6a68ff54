"""``leanseg predict``: a thin layer over ``leanseg.predict`` (one case) and ``leanseg.predict_folder`` (a folder of
cases, ``-o`` a folder) with the same parameter names."""

from __future__ import annotations

from pathlib import Path

import typer

from leanseg.cli.imports import import_modules, import_option
from leanseg.errors import LeanSegError
from leanseg.options import MAX_OVERLAP, parse_window, resolve_device
from leanseg.spacing import parse_spacing


def predict_cmd(
    inputs: list[Path] = typer.Argument(..., help="a .nii/.nii.gz file, several NIfTI files (one per channel), a "
                                             "case folder, a SEG-Y cube or an image; or a folder of cases with -o a "
                                             "folder (a name without suffix)"),
    model: list[str] | None = typer.Option(None, "-m", "--model", help="checkpoint (.safetensors), zoo name (leanseg "
                                           "models --pretrained), a training run's folder (its best.safetensors) or "
                                           "a cross-validation's (every fold_*); repeat for an ensemble "
                                           "(probabilities averaged); "
                                           "default: the last `leanseg train` model that fits the input, else the "
                                           "zoo's for its kind (SEG-Y: faults)"),
    output: Path | None = typer.Option(None, "-o", "--output", help="label map; the suffix picks the format "
                                       "(.nii.gz, .sgy, .npy, .png); default: beside the input, '<name>_pred'. For a "
                                       "folder of cases, the output folder (OUT/<case>.nii.gz, .sgy, .png)"),
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
    num_parts: int = typer.Option(1, help="folder: split the sorted cases into this many parts (job arrays)"),
    part_id: int = typer.Option(0, help="folder: predict part K (0 to num-parts - 1): every N-th case from K on"),
    scheduler: str | None = typer.Option(None, help="a Dask scheduler's address (tcp://host:8786): its workers "
                                         "predict the folder's cases, or a SEG-Y cube's slabs"),
    workers: int | None = typer.Option(None, help="start a local Dask cluster of this many worker processes"),
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
    window_arg = sizes[0] if sizes and len(sizes) == 1 else sizes
    if len(inputs) == 1 and inputs[0].is_dir() and output is not None and (output.is_dir() or not output.suffix):
        _folder(inputs[0], chosen, output=output, window=window_arg, overlap=overlap, tta=tta, device=device, amp=amp,
                probabilities=probabilities, preview=preview, batch_size=batch_size, slab=slab, halo=halo,
                postprocess=postprocess, uncertainty=uncertainty, progress=progress, crop=crop, precision=precision,
                spacing=spacing, num_parts=num_parts, part_id=part_id, scheduler=scheduler, workers=workers)
        return
    if (num_parts, part_id) != (1, 0):
        raise LeanSegError("--num-parts and --part-id split a folder's cases: give IN_FOLDER -o OUT_FOLDER")
    out = predict(inputs, chosen, output=output,
                  window=window_arg,
                  overlap=overlap, tta=tta, device=device, amp=amp, probabilities=probabilities, preview=preview,
                  batch_size=batch_size, slab=slab, halo=halo, postprocess=postprocess, uncertainty=uncertainty,
                  progress=progress, crop=crop, precision=precision, spacing=spacing, scheduler=scheduler,
                  workers=workers)
    typer.echo(str(out))


def _folder(folder: Path, model, **options) -> None:
    """``leanseg.predict_folder``, a summary on stderr, and exit code 2 when a case failed."""
    import sys

    from leanseg.batch import predict_folder

    result = predict_folder(folder, model, **options)
    print(f"leanseg: {result.summary()}", file=sys.stderr)
    if result.peak_mb:
        peaks = ", ".join(f"{where} {mb:.0f} MB" for where, mb in sorted(result.peak_mb.items()))
        print(f"leanseg: peak memory: {peaks}", file=sys.stderr)
    typer.echo(str(options["output"]))
    if result.failed:
        print(f"leanseg: error: {len(result.failed)} case(s) failed, listed in {result.failures}", file=sys.stderr)
        raise typer.Exit(2)
