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


@register
def monai_dynunet(spatial_dims: int, in_channels: int, out_channels: int,
                  features: Sequence[int] = (32, 64, 128, 256, 320), deep_supervision: bool = False,
                  **_lean_only: object) -> nn.Module:
    """MONAI DynUNet as nnU-Net plans a 3D full-resolution U-Net: 3x3(x3) kernels, stride 1 then 2 per level,
    two convs per level, instance norm, leaky ReLU, transposed-conv upsampling; ``features`` one width per level.
    With ``deep_supervision`` training returns a list of logits, full resolution first (what leanseg's loop
    weights), instead of DynUNet's stacked tensor. Options that only LeanUNet has (``down``, ``dense_levels``...)
    are ignored, so a dataset plan's network can be swapped for this one by name."""
    import torch
    from monai.networks.nets import DynUNet

    levels = len(tuple(features))
    strides = [1] + [2] * (levels - 1)

    class _DynUNet(DynUNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
            out = super().forward(x)
            if self.training and self.deep_supervision:
                return list(torch.unbind(out, dim=1))
            return out

    return _DynUNet(spatial_dims, in_channels, out_channels, kernel_size=[3] * levels, strides=strides,
                    upsample_kernel_size=strides[1:], filters=list(features), norm_name=("INSTANCE", {"affine": True}),
                    act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
                    deep_supervision=deep_supervision, deep_supr_num=max(1, min(levels - 2, 2)), res_block=False)
