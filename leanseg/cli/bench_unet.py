"""``leanseg bench unet``: LeanUNet, its dense twin and MONAI's U-Nets on one 3D patch."""

from __future__ import annotations

import typer


def bench_unet(
    size: int = typer.Option(128, help="patch edge (a multiple of 16); 32 runs in seconds"),
    in_channels: int = typer.Option(4, help="input channels (4: BraTS modalities)"),
    out_channels: int = typer.Option(3, help="output channels (3: BraTS regions)"),
    features: str = typer.Option("32,64,128,256,320", help="widths per level, comma-separated"),
    repeats: int = typer.Option(3, help="timed forwards per model (the median is reported)"),
    models: str = typer.Option("", help="comma-separated subset of the rows (default: all)"),
    train_batch: int = typer.Option(2, help="patches per training step in the training table (0: no table)"),
    train_repeats: int = typer.Option(1, help="timed training steps per model (the median is reported)"),
):
    """Weights, multiply-adds, CPU forward time and peak memory for a size^3 patch, batch 1 (float32, and bf16
    for LeanUNet), then one training step (forward + backward) of LeanUNet, its dense twin and SegResNet."""
    from leanseg.bench.models import bench_unet as run
    from leanseg.options import parse_ints

    run(size=size, in_channels=in_channels, out_channels=out_channels,
        features=tuple(parse_ints(features, "--features")), repeats=repeats,
        names=[m.strip() for m in models.split(",") if m.strip()] or None, train_batch=train_batch,
        train_repeats=train_repeats)
