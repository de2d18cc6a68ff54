"""``leanseg bench export``: onnxruntime beside the CPU fast path on one LeanUNet patch."""

from __future__ import annotations

import typer


def bench_export(
    size: int = typer.Option(64, help="patch edge (a multiple of 16)"),
    features: str = typer.Option("32,64,128,256,320", help="LeanUNet widths per level (BraTS width by default)"),
    repeats: int = typer.Option(3, help="timed forwards per path (the median is reported)"),
):
    """Forward time of a 4 x size^3 patch: leanseg's CPU fast path and its ONNX export on onnxruntime."""
    from leanseg.errors import LeanSegError
    from leanseg.options import at_least, parse_ints

    if at_least(size, 16, "--size") % 16:
        raise LeanSegError(f"--size must be a multiple of 16, got {size}")
    at_least(repeats, 1, "--repeats")

    try:
        import onnxruntime  # noqa: F401

        from leanseg.bench.export import bench_export as run
    except ImportError:
        raise LeanSegError("bench export needs onnx and onnxruntime: pip install 'leanseg[export]'") from None
    run(size=size, features=parse_ints(features, "--features"), repeats=repeats)
