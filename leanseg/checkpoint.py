"""Checkpoints: one ``.safetensors`` file holding the weights and, in its header, a JSON config.

The config rebuilds the model through the registry (``leanseg.models.create(model, **model_kwargs)``), so
loading never unpickles anything: a checkpoint from a stranger can at worst hold wrong numbers. The JSON is
readable without leanseg: ``safetensors.safe_open(path, "np").metadata()["leanseg"]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from leanseg.errors import LeanSegError
from leanseg.io._files import atomic_path

FORMAT = "leanseg-checkpoint"
VERSION = 1
_KEY = "leanseg"  # the safetensors metadata entry that holds the JSON config


def save_model(model, path: str | os.PathLike, /, **meta) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path`` (a ``.safetensors`` file), atomically.

    Meta keys (all JSON values; tuples come back as lists):
        model (required): registry name, e.g. "lean_unet".
        model_kwargs (required): the keyword arguments of ``leanseg.models.create``, e.g. ``{"spatial_dims": 3,
            "in_channels": 2, "out_channels": 5, "features": [16, 32, 64]}``.
        task: the pipeline's name, e.g. "brats" or "faults".
        channels: input channel names in order, e.g. ``["flair", "t1c"]``; case folders are searched for them.
        labels: ``{class name: label value}`` in output-channel order (softmax + argmax), e.g.
            ``{"background": 0, "necrosis": 1, "edema": 2, "enhancing": 4}``; or
        regions: ``{region name: [label values]}`` in output-channel order (sigmoid + threshold 0.5, largest
            region first), e.g. ``{"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}``.
        normalization: "none", "zscore", ``{"kind": "zscore", "nonzero": true}`` or
            ``{"kind": "fixed", "mean": [...], "std": [...]}`` (per channel), applied before the model.
        window: the sliding-window size the model was trained on, e.g. ``[128, 128, 128]``.
        anything else JSON can hold (epoch, metrics, ...).
    """
    import torch
    from safetensors.torch import save_file

    for key in ("model", "model_kwargs"):
        if key not in meta:
            raise ValueError(f"save_model needs meta {key!r} to rebuild the model from the registry")
    config = {"format": FORMAT, "version": VERSION, **meta}
    try:
        text = json.dumps(config)
    except TypeError as err:
        raise ValueError(f"checkpoint meta must be JSON values: {err}") from None
    # safetensors refuses tensors that share memory; a state_dict can hold such views (tied weights)
    weights = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
               for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(weights, str(tmp), metadata={_KEY: text})
    return path


def read_meta(path: str | os.PathLike) -> dict:
    """The JSON config of a checkpoint, without building the model."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise LeanSegError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})[_KEY])
    except KeyError:
        raise LeanSegError(f"{path}: not a leanseg checkpoint (no '{_KEY}' config in the safetensors header)") from None
    except Exception as err:  # SafetensorError, JSONDecodeError, OSError
        raise LeanSegError(f"{path}: corrupt or not a safetensors checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise LeanSegError(f"{path}: not a leanseg checkpoint (its config lacks format/model)")
    return meta


def load_model(path: str | os.PathLike):
    """Rebuild the model of a checkpoint on the CPU in eval mode; returns ``(model, meta)``."""
    from safetensors.torch import load_file

    import leanseg.models  # registers the models

    path = Path(path)
    meta = read_meta(path)
    try:
        model = leanseg.models.create(meta["model"], **meta.get("model_kwargs", {}))
    except LeanSegError as err:
        raise LeanSegError(f"{path}: {err}") from None
    except (TypeError, ValueError) as err:
        raise LeanSegError(f"{path}: cannot build model {meta['model']!r} from its config ({err})") from None
    try:
        weights = load_file(str(path))
        model.load_state_dict(weights, strict=True)
    except Exception as err:  # truncated data, missing or extra tensors, wrong shapes
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LeanSegError(f"{path}: weights do not load into {meta['model']!r} ({first})") from None
    return model.eval(), meta
