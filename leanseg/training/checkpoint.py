"""Model checkpoints in the format `leanseg predict` reads.

leanseg.checkpoint.save_model (weights in safetensors + a JSON config naming the model and its kwargs) is the
format; this module only adds the training metadata and writes atomically. Until that module is present, a
minimal stand-in writes the same content: safetensors weights with the JSON in the header metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from leanseg.training.state import atomic_save


def model_spec(model: nn.Module, cfg) -> tuple[str, dict]:
    """(registry name, kwargs) that rebuild ``model``: its own ``config`` when it has one, else the task's."""
    kwargs = dict(getattr(model, "config", None) or {})
    if not kwargs:
        kwargs = dict(cfg.model_kwargs) | {"spatial_dims": cfg.spatial_dims, "in_channels": len(cfg.channels),
                                           "out_channels": len(cfg.classes)}
    return cfg.model, kwargs


def save(model: nn.Module, path: Path, cfg, meta: dict) -> None:
    name, kwargs = model_spec(model, cfg)
    try:
        from leanseg.checkpoint import save_model
    except ImportError:
        save_model = None
    if save_model is not None:
        save_model(model, path, **meta)
        return
    header = {"model": name, "model_kwargs": kwargs, **meta}
    atomic_save(dict(model.state_dict()), Path(path), {"leanseg": json.dumps(header, default=_plain)})


def _plain(value):
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)
