"""Model checkpoints in the format `leanseg predict` reads (leanseg.checkpoint: safetensors weights and a JSON
config naming the registry model and its kwargs), plus the training metadata (epoch, metrics, seed, data)."""

from __future__ import annotations

from pathlib import Path

from torch import nn


def model_spec(model: nn.Module) -> tuple[str, dict]:
    """(registry name, kwargs) that rebuild ``model``, as pipelines._common.build_model recorded them; a model's
    own ``config`` (LeanUNet has one) is preferred, being complete down to the defaults."""
    name, kwargs = model.leanseg_spec
    own = getattr(model, "config", None)
    return name, dict(own) if isinstance(own, dict) else dict(kwargs)


def save(model: nn.Module, path: Path, meta: dict) -> None:
    from leanseg.checkpoint import save_model

    name, kwargs = model_spec(model)
    save_model(model, path, model=name, model_kwargs=_plain(kwargs), **_plain(meta))


def _plain(value):
    """JSON-able copy: tuples to lists, numpy/torch scalars to numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value
