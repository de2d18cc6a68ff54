"""Lean networks (U-Nets, the paper's ResNets) and their registry."""

from leanseg.models import faultseg, monai_nets  # noqa: F401  (register faultseg3d_unet and the MONAI nets)
from leanseg.models._registry import available, create, register
from leanseg.models.resnet import CONFIGS, LeanResNet, ResNetConfig
from leanseg.models.unet import LeanUNet, UNetConfig

__all__ = ["CONFIGS", "LeanResNet", "LeanUNet", "ResNetConfig", "UNetConfig", "available", "create", "register"]
