"""``leanseg models``: every registered model, lean against dense, with weights and multiply-adds."""

from __future__ import annotations

import typer

from leanseg.cli.imports import import_modules, import_option


def models(
    input_shape: str = typer.Option("4x128x128x128", "--input", help="one sample: CxHxW (2D) or CxDxHxW (3D)"),
    pretrained: bool = typer.Option(False, "--pretrained", help="list the pretrained models shipped in the package"),
    imports: list[str] | None = import_option(),
):
    """Weights and multiply-adds of every registered model for one input, lean against its dense twin; with
    --pretrained, the zoo (name, task, input, weights, size, summary from its card)."""
    import_modules(imports)
    if pretrained:
        from leanseg.pretrained import table

        print(table())
        return
    from leanseg.bench.models import models_table

    print(models_table(input_shape))
