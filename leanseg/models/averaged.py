"""``averaged``: several networks of one task as one model, so an ensemble (the folds of a cross-validation) ships
as one checkpoint and predicts through every path a single network does (predict, segment, the viewer, export).

The forward returns the logarithm of the members' mean probability (softmax) or the logit of their mean sigmoid,
so the activation that inference applies gives back exactly the mean probability, which is what
``leanseg.ensemble`` averages when the checkpoints are given one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from leanseg.errors import LeanSegError
from leanseg.models._registry import create, register


class Averaged(nn.Module):
    """Members built from registry specs ``{"model": name, "model_kwargs": {...}}``; ``activation`` is that of the
    task ("softmax" or "sigmoid")."""

    registry_name = "averaged"

    def __init__(self, members: Sequence[dict], activation: str = "softmax", **dims: int | None):
        super().__init__()
        if not members:
            raise LeanSegError("an averaged model needs at least one member")
        if activation not in ("softmax", "sigmoid"):
            raise LeanSegError(f"averaged model: activation must be softmax or sigmoid, got {activation!r}")
        nets = []
        for i, spec in enumerate(members):
            if not isinstance(spec, dict) or not isinstance(spec.get("model"), str) or spec["model"] == "averaged":
                raise LeanSegError(f"averaged model: member {i} must be {{\"model\": name, \"model_kwargs\": {{}}}}")
            nets.append(create(spec["model"], **dict(spec.get("model_kwargs", {}))))
        self.members = nn.ModuleList(nets)
        self.activation = activation
        self.specs = [dict(s) for s in members]
        # what checkpoint readers look up (spatial_dims, in_channels, out_channels): given, else the first member's
        self.dims: dict[str, int] = {}
        for name in ("spatial_dims", "in_channels", "out_channels"):
            value = dims.get(name)
            for i, spec in enumerate(self.specs):
                own = dict(spec.get("model_kwargs", {})).get(name)
                if value is not None and own is not None and own != value:
                    raise LeanSegError(f"averaged model: member {i} has {name} {own}, the ensemble {value}")
                value = own if value is None else value
            if value is not None:
                self.dims[name] = int(value)

    @property
    def config(self) -> dict[str, Any]:
        return {"members": self.specs, "activation": self.activation, **self.dims}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [m(x) for m in self.members]
        outs = [o[0] if isinstance(o, list | tuple) else o for o in outs]  # deep supervision: the full resolution
        if self.activation == "softmax":
            mean = torch.stack([o.float().softmax(1) for o in outs]).mean(0)
            return mean.clamp_min(1e-12).log()
        mean = torch.stack([o.float().sigmoid() for o in outs]).mean(0).clamp(1e-7, 1 - 1e-7)
        return torch.log(mean) - torch.log1p(-mean)


@register
def averaged(members: Sequence[dict], activation: str = "softmax", spatial_dims: int | None = None,
             in_channels: int | None = None, out_channels: int | None = None) -> Averaged:
    """The mean of ``members`` (registry specs); ``spatial_dims``/``in_channels``/``out_channels`` are recorded for
    checkpoint readers and must match the members'."""
    return Averaged(members, activation, spatial_dims=spatial_dims, in_channels=in_channels,
                    out_channels=out_channels)


__all__ = ["Averaged", "averaged"]
