"""``leanseg models``: every registered model, lean against dense, with weights and multiply-adds."""

from __future__ import annotations

import typer


def models(
    input_shape: str = typer.Option("4x128x128x128", "--input", help="one sample: CxHxW (2D) or CxDxHxW (3D)"),
):
    """Weights and multiply-adds of every registered model for one input, lean against its dense twin."""
    from leanseg.bench.models import models_table

    print(models_table(input_shape))
