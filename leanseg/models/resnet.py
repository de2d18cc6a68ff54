"""LeanResNet: the classification ResNets of the LeanResNet paper (its Table 2, variants A to F).

Architecture that reproduces the paper's weight counts (Table 1): an opening 3x3 conv; stages whose first step
changes width (and, after the first stage, halves the resolution) with two convolutions and no shortcut, and
whose remaining steps are residual, y + K2 s(N(K1 s(N(y)))); a final norm and activation, global average
pooling and a linear classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from leanseg.errors import LeanSegError
from leanseg.models._registry import register
from leanseg.nn.blocks import ResidualBlock
from leanseg.nn.factories import AVG_POOL, LayerSpec, act_layer, check_dims, conv_layer, norm_layer
from leanseg.options import ConvKind, look_up_option


@dataclass(frozen=True)
class ResNetVariant:
    widths: tuple[int, ...]  # channels of each stage
    steps: tuple[int, ...]  # steps per stage, the width-changing first step included
    dataset: str  # what the paper trained it on (the input size follows from it)


# The paper's Table 2. A, C, E are its dense ResNets made lean; B, D, F are dense ResNets narrowed to about
# the lean weight count, the comparison the paper makes.
VARIANTS = {
    "A": ResNetVariant((32, 64, 128, 256), (2, 3, 3, 3), "CIFAR-10"),
    "B": ResNetVariant((12, 24, 48, 96), (2, 3, 3, 3), "CIFAR-10"),
    "C": ResNetVariant((64, 128, 256, 512), (3, 5, 7, 4), "CIFAR-100"),
    "D": ResNetVariant((24, 48, 96, 192), (3, 5, 7, 4), "CIFAR-100"),
    "E": ResNetVariant((32, 64, 128, 256, 512), (2, 3, 3, 3, 3), "STL-10"),
    "F": ResNetVariant((12, 24, 48, 96, 192), (2, 3, 3, 3, 3), "STL-10"),
}


class LeanResNet(nn.Module):
    """The paper's ResNet ``variant`` ("A".."F", its Table 2), lean (``conv="lean"``) or dense.

    ``widths`` and ``steps`` override the variant's for custom depths. The opening conv is dense by
    default (``first_conv``): with 3 input channels a lean conv saves 750 weights and loses the spatial taps
    of the colour channels. Batch norm and ReLU, as the paper's classification networks use.
    """

    registry_name = "lean_resnet"  # with ``config``: leanseg.save_model rebuilds it without leanseg.models.create

    def __init__(self, variant: str = "A", num_classes: int = 10, spatial_dims: int = 2, in_channels: int = 3,
                 conv: str | ConvKind = "lean", norm: LayerSpec = "batch", act: LayerSpec = "relu",
                 first_conv: str | ConvKind = "dense", widths: tuple[int, ...] | None = None,
                 steps: tuple[int, ...] | None = None):
        super().__init__()
        table = look_up_option(variant, VARIANTS, what="LeanResNet variant")
        widths = tuple(widths or table.widths)
        steps = tuple(steps or table.steps)
        if len(widths) != len(steps) or min(steps) < 1:
            raise LeanSegError(f"widths and steps need one entry per stage, steps >= 1; got {widths}, {steps}")
        d = check_dims(spatial_dims)
        self._config: dict[str, Any] = {
            "variant": variant, "num_classes": num_classes, "spatial_dims": spatial_dims, "in_channels": in_channels,
            "conv": conv, "norm": norm, "act": act, "first_conv": first_conv, "widths": list(widths),
            "steps": list(steps)}
        common: dict[str, Any] = {"conv": conv, "norm": norm, "act": act}
        self.stem = conv_layer(first_conv if conv == "lean" else "dense", d, in_channels, widths[0])
        stages, c = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, steps, strict=True)):
            blocks = [ResidualBlock(d, c, w, stride=1 if i == 0 else 2, **common)]
            blocks += [ResidualBlock(d, w, w, **common) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c = w
        self.stages = nn.Sequential(*stages)
        self.norm = norm_layer(norm, d, c)
        self.act = act_layer(act)
        self.pool = AVG_POOL[d](1)
        self.fc = nn.Linear(c, num_classes)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments: ``LeanResNet(**model.config)`` rebuilds the model."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)  # see LeanUNet
        x = self.stages(self.stem(x))  # (N, widths[-1], *spatial / 2^(stages - 1))
        x = self.pool(self.act(self.norm(x))).flatten(1)  # (N, widths[-1])
        return self.fc(x)  # (N, num_classes)


@register
def lean_resnet(**kwargs: Any) -> LeanResNet:
    """LeanResNet(variant="A".."F", num_classes, spatial_dims=2, ...); ``conv="dense"`` builds the dense ResNet."""
    return LeanResNet(**kwargs)
