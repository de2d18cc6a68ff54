"""``leanseg export``: a checkpoint as ONNX or a torch.export program, a thin layer over ``leanseg.export``."""

from __future__ import annotations

from pathlib import Path

import typer

from leanseg.cli.imports import import_modules, import_option


def export_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.safetensors from leanseg.save_model)"),
    output: Path = typer.Option(..., "-o", "--output", help="model.onnx (standard operators) or model.pt2 "
                                "(torch.export)"),
    stencil: str = typer.Option("depthwise", help="ONNX form of the stencil: depthwise (faster on onnxruntime) "
                                "or shifted"),
    input_shape: str | None = typer.Option(None, help="spatial size of the traced example, e.g. 32 or 32,48,40 "
                                           "(sizes stay dynamic; default 32)"),
    imports: list[str] | None = import_option(),
):
    """Export a checkpoint; its config (channels, labels/regions, normalisation, window) travels with it."""
    import_modules(imports)
    from leanseg.export import export
    from leanseg.options import parse_window

    sizes = parse_window(input_shape, what="--input-shape") if input_shape is not None else None
    out = export(checkpoint, output, stencil=stencil,
                 input_shape=sizes[0] if sizes and len(sizes) == 1 else sizes)
    typer.echo(str(out))
