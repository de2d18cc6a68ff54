"""Lean networks (U-Nets, the paper's ResNets) and their registry."""

from leanseg.models._registry import available, create, register
from leanseg.models.resnet import CONFIGS, LeanResNet, ResNetConfig
from leanseg.models.unet import LeanUNet, UNetConfig

__all__ = ["CONFIGS", "LeanResNet", "LeanUNet", "ResNetConfig", "UNetConfig", "available", "create", "register"]
