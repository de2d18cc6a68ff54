"""FaultSeg3D's network (Wu, Liang, Shi, Fomel 2019, Geophysics 84(3)): their simplified U-Net, rebuilt from the
paper's description for side-by-side comparisons (``leanseg bench faults``). Dense 3x3x3 convolutions with ReLU and
no normalisation, two per level; max-pooling down, nearest upsampling and concatenation up; widths 16-32-64-128
and a 512-wide bottom; one sigmoid output (the logits are returned, as every leanseg model does)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from leanseg.models._registry import register
from leanseg.nn.factories import CONV, check_dims

MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}


def _double_conv(spatial_dims: int, cin: int, cout: int) -> nn.Sequential:
    conv = CONV[spatial_dims]
    return nn.Sequential(conv(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         conv(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class FaultSegUNet(nn.Module):
    registry_name = "faultseg3d_unet"  # with ``config``: leanseg.save_model rebuilds it without create()

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 1,
                 features: tuple[int, ...] = (16, 32, 64, 128, 512)):
        super().__init__()
        self.spatial_dims = check_dims(spatial_dims)
        widths = list(features)
        self._config: dict[str, Any] = {"spatial_dims": spatial_dims, "in_channels": in_channels,
                                        "out_channels": out_channels, "features": widths}
        self.down = nn.ModuleList(_double_conv(spatial_dims, c_in, c_out)
                                  for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True))
        self.pool = MAX_POOL[spatial_dims](2)
        self.up = nn.ModuleList(_double_conv(spatial_dims, wide + skip, skip)
                                for wide, skip in zip(widths[:0:-1], widths[-2::-1], strict=True))
        self.head = CONV[spatial_dims](widths[0], out_channels, 1)
        self.multiple = 2 ** (len(widths) - 1)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments: ``FaultSegUNet(**model.config)`` rebuilds the model."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]  # (N, C, D, H, W): pad each axis to a multiple of 2**levels, crop back at the end
        pad = [p for s in reversed(size) for p in (0, -s % self.multiple)]
        x = F.pad(x, pad)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for block, skip in zip(self.up, skips[-2::-1], strict=True):
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skip], 1))
        return self.head(x)[(...,) + tuple(slice(0, s) for s in size)]


@register
def faultseg3d_unet(**kwargs: Any) -> FaultSegUNet:
    """FaultSeg3D's simplified U-Net (dense, 16-32-64-128-512 by default)."""
    return FaultSegUNet(**kwargs)
