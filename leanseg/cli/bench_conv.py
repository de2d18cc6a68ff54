"""``leanseg bench conv``: the lean operator against the dense convolution and the memory/compute floor."""

from __future__ import annotations

import typer


def bench_conv(
    dims: str = typer.Option("2,3", help="spatial dims to run, comma-separated"),
    channels: str = typer.Option("16,32,64,128", help="channel counts C (square layers C -> C)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    dtype: str = typer.Option("float32", help="float32, float16 or bfloat16"),
    size: int = typer.Option(0, help="spatial size (0: the per-C defaults of the issue's targets)"),
    batch: int = typer.Option(1, help="batch size"),
    repeats: int = typer.Option(5, help="timed repetitions (the best is reported)"),
):
    """Time forward and forward+backward of dense, depthwise+1x1, reference and fast lean convolutions."""
    from leanseg.bench.conv import run
    from leanseg.options import parse_ints

    run(
        dims=parse_ints(dims, "--dims"),
        channels=parse_ints(channels, "--channels"),
        device=device,
        dtype=dtype,
        size=size,
        batch=batch,
        repeats=repeats,
    )
