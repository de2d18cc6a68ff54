"""``leanseg bench stream``: streaming prediction of a synthetic SEG-Y cube; peak RSS and throughput."""

from __future__ import annotations

import typer


def bench_stream(
    size_gb: float = typer.Option(4.0, help="size of the synthetic cube in GB (the issue asks for >= 4)"),
    xlines: int = typer.Option(1024, help="crosslines per inline"),
    samples: int = typer.Option(512, help="samples per trace"),
    window: str = typer.Option("32,256,256", help="sliding window (inline, xline, sample)"),
    slab: int = typer.Option(28, help="inlines written per streaming step"),
    halo: int = typer.Option(2, help="inlines of context on each side of a slab (the tiny net sees 2)"),
    overlap: float = typer.Option(0.0625, help="window overlap"),
    workdir: str | None = typer.Option(None, help="folder for the temporary cube (default: the system temp dir)"),
    keep: bool = typer.Option(False, help="keep the cube and the prediction"),
):
    """Write a synthetic SEG-Y cube, predict it slab by slab, report peak RSS (< 1.5 GB) and throughput."""
    from leanseg.bench.stream import run
    from leanseg.options import at_least, parse_window

    at_least(size_gb, 1e-4, "--size-gb")
    at_least(xlines, 2, "--xlines")
    at_least(samples, 8, "--samples")
    run(size_gb=size_gb, xlines=xlines, samples=samples, window=parse_window(window, 3, what="--window"), slab=slab,
        halo=halo, overlap=overlap, workdir=workdir, keep=keep)
