"""MONAI's networks in the leanseg registry, so they train, save and predict through the same code as LeanUNet.

Users coming from MONAI can compare like with like (``leanseg train --task brats --model monai_unet``), and the
benchmarks use these entries rather than private builders. Each takes leanseg's argument names
(``spatial_dims``, ``in_channels``, ``out_channels``, ``features``); MONAI is imported when one is built.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from leanseg.models._registry import register


@register
def monai_unet(spatial_dims: int, in_channels: int, out_channels: int,
               features: Sequence[int] = (32, 64, 128, 256, 320), num_res_units: int = 2,
               norm: str = "instance") -> nn.Module:
    """MONAI UNet: strided from its first convolution; two residual units per level as in MONAI's tutorials."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                channels=tuple(features), strides=(2,) * (len(features) - 1), num_res_units=num_res_units, norm=norm)


@register
def monai_segresnet(spatial_dims: int, in_channels: int, out_channels: int, init_filters: int = 32) -> nn.Module:
    """MONAI SegResNet (Myronenko 2018), widths init_filters x 1, 2, 4, 8."""
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                     init_filters=init_filters)


@register
def monai_basicunet(spatial_dims: int, in_channels: int, out_channels: int,
                    features: Sequence[int] = (32, 64, 128, 256, 512)) -> nn.Module:
    """MONAI BasicUNet; ``features`` are the five encoder widths (the last decoder level reuses the first)."""
    from monai.networks.nets import BasicUNet

    feats = tuple(features)
    return BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                     features=(*feats, feats[0]))
