"""Ensembles and uncertainty: several checkpoints (and/or mirrorings) predicted in one sliding window.

An :class:`Ensemble` holds the member networks and hands ``leanseg.inference.sliding_window_predict`` one
per-window predictor (its ``predictor`` method), so every window is read, padded and blended once whatever the
number of members. The predictor returns the mean probability over members x mirrorings and, when asked, one more
channel: the voxel-wise standard deviation over them, averaged over the output channels (blended across windows
like the probabilities, which is what MONAI's Gaussian blending does to any channel).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leanseg.checkpoint import CheckpointMeta
from leanseg.errors import LeanSegError

# Fields every member must share: what the input means and what the outputs mean. Windows may differ (the first
# member's is used); so may the architecture, which is the point of an ensemble.
_SHARED = ("task", "channels", "labels", "regions", "normalization", "spatial_dims", "in_channels", "out_channels",
           "spacing")


class Ensemble(nn.Module):
    """Member networks whose probabilities are averaged. ``uncertainty``: also return their std (one channel)."""

    def __init__(self, members: Sequence[nn.Module], uncertainty: bool = False):
        super().__init__()
        if not members:
            raise LeanSegError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)
        self.uncertainty = uncertainty

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("an Ensemble averages probabilities: use it through leanseg.inference.sliding_window_predict")

    def predictor(self, activation: str, tta: bool, device: torch.device, amp: bool) -> Callable:
        """The per-window function: ``(B, C, *window)`` -> ``(B, K (+1), *window)`` on ``device``."""
        from leanseg.inference import ACTIVATIONS

        activate = ACTIVATIONS[activation]

        def predict(x: torch.Tensor) -> torch.Tensor:  # (B, C, *window)
            spatial = range(2, x.ndim)
            flips = [c for r in range(len(spatial) + 1) for c in itertools.combinations(spatial, r)] if tta else [()]
            x = x.to(device)
            total = squares = None
            with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                for net, axes in itertools.product(self.members, flips):
                    y = activate(net(x.flip(axes) if axes else x).float())  # (B, K, *window)
                    y = y.flip(axes) if axes else y
                    if self.uncertainty:  # float64 sums: the variance of near-equal members is a small difference
                        y = y.double()
                        squares = y**2 if squares is None else squares + y**2
                    total = y if total is None else total + y
            assert total is not None  # at least one member and the identity flip
            n = len(self.members) * len(flips)
            mean = total / n
            if squares is None:
                return mean
            var = (squares / n - mean**2).clamp_min(0)  # population variance over the n predictions
            return torch.cat([mean, var.sqrt().mean(1, keepdim=True)], 1).float()

        return predict


def check_members(metas: Sequence[CheckpointMeta], names: Sequence[str]) -> CheckpointMeta:
    """The ensemble's meta (the first member's) once every member agrees on inputs and outputs; else one line."""
    first = metas[0]
    for meta, name in zip(metas[1:], names[1:], strict=True):
        for key in _SHARED:
            a, b = getattr(first, key), getattr(meta, key)
            if a != b:
                raise LeanSegError(f"{name}: {key} {_show(b)} differs from {names[0]}'s {_show(a)}; "
                                   "the models of an ensemble must share inputs, outputs, normalisation and spacing")
    return first


def _show(value) -> str:
    return repr(value.to_json() if hasattr(value, "to_json") else value)


def load_ensemble(models: Sequence, uncertainty: bool = False) -> tuple[Ensemble, CheckpointMeta]:
    """``(Ensemble, meta)`` from checkpoint paths or ``(model, meta)`` pairs, checked to agree."""
    from leanseg.checkpoint import load_model

    nets, metas, names = [], [], []
    for i, item in enumerate(models):
        if isinstance(item, str | os.PathLike):
            net, meta = load_model(item)
            names.append(str(item))
        elif isinstance(item, tuple | list) and len(item) == 2:
            net, meta = item
            meta = meta if isinstance(meta, CheckpointMeta) else CheckpointMeta.from_json(meta, source=f"model {i}")
            names.append(f"model {i}")
        else:
            raise LeanSegError(f"model {i}: expected a checkpoint path or a (model, meta) pair")
        nets.append(net)
        metas.append(meta)
    if not nets:
        raise LeanSegError("no model given")
    return Ensemble(nets, uncertainty), check_members(metas, names)




def members_of(model) -> list | None:
    """The list of models when ``model`` names several (paths, or (model, meta) pairs); None for one model."""
    if isinstance(model, str | os.PathLike) or not isinstance(model, Sequence) or not model:
        return None
    if len(model) == 2 and isinstance(model[0], nn.Module):  # one (model, meta) pair
        return None
    return list(model)


def run_checkpoints(folder: Path) -> list[Path]:
    """The checkpoints a training output folder stands for: its ``best.safetensors`` (one run), else the
    ``best.safetensors`` of each ``fold_*`` below it (a cross-validation, whose folds predict as an ensemble)."""
    best = folder / "best.safetensors"
    if best.is_file():
        return [best]
    folds = sorted(p / "best.safetensors" for p in folder.glob("fold_*") if (p / "best.safetensors").is_file())
    if not folds:
        raise LeanSegError(f"{folder}: a folder given as a model must hold best.safetensors (a training run) or "
                           "fold_*/best.safetensors (a cross-validation)")
    return folds


def expand_models(model):
    """``model`` with every folder among its paths replaced by the checkpoints it holds (``run_checkpoints``): a
    list when that makes several, else ``model`` as given."""
    items = members_of(model)
    single = items is None
    expanded: list = []
    for item in [model] if single else items:
        if isinstance(item, str | os.PathLike) and Path(item).is_dir():
            expanded += run_checkpoints(Path(item))
        else:
            expanded.append(item)
    if single and len(expanded) == 1:
        return expanded[0]
    return expanded


def average_checkpoints(paths: Sequence[str | os.PathLike], output: str | os.PathLike, **fields: Any) -> Path:
    """Write the checkpoints ``paths`` (which must agree on inputs and outputs) as one ``averaged`` checkpoint at
    ``output``, with the first one's meta (task, channels, labels, normalisation, window, spacing, postprocess)."""
    from leanseg.checkpoint import load_model, model_spec, save_model
    from leanseg.models._registry import ModelSpec
    from leanseg.models.averaged import Averaged

    loaded = [load_model(p) for p in paths]
    meta = check_members([m for _, m in loaded], [str(p) for p in paths])
    specs = []
    for net, _ in loaded:
        spec = model_spec(net)
        if spec is None:
            raise LeanSegError("averaged: every member must be a registry model")
        specs.append({"model": spec.name, "model_kwargs": spec.kwargs})
    model = Averaged(specs, meta.label_manager.activation)
    model.build_spec = ModelSpec("averaged", model.config)  # type: ignore[assignment]  # as create() records it
    for member, (net, _) in zip(model.members, loaded, strict=True):
        member.load_state_dict(net.state_dict())
    spec = model_spec(model)
    assert spec is not None  # built by create()
    return save_model(model, output, meta.replace(model="averaged", model_kwargs=spec.kwargs, members=len(specs),
                                                  **fields))


__all__ = ["Ensemble", "average_checkpoints", "check_members", "expand_models", "load_ensemble", "members_of",
           "run_checkpoints"]
