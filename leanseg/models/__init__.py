"""Lean networks (U-Nets, the paper's ResNets) and their registry."""

from leanseg.models import averaged, faultseg, monai_nets  # noqa: F401  (register them)
from leanseg.models._registry import accepted_kwargs, available, create, register
from leanseg.models.resnet import VARIANTS, LeanResNet, ResNetVariant
from leanseg.models.unet import LeanUNet, UNetConfig

__all__ = ["VARIANTS", "LeanResNet", "LeanUNet", "ResNetVariant", "UNetConfig", "accepted_kwargs", "available",
           "create", "register"]
