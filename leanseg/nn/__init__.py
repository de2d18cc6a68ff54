"""Lean convolution layers and the layer factories shared by 2D and 3D models."""

from leanseg.nn.blocks import ConvNormAct, DownBlock, LeanConvTranspose, ResidualBlock, UpBlock
from leanseg.nn.functional import dense_weight, lean_conv, lean_conv_reference
from leanseg.nn.lean_conv import LeanConv, LeanReport, lean
from leanseg.nn.norm import InstanceNorm

__all__ = [
    "ConvNormAct",
    "DownBlock",
    "InstanceNorm",
    "LeanConv",
    "LeanConvTranspose",
    "LeanReport",
    "ResidualBlock",
    "UpBlock",
    "dense_weight",
    "lean",
    "lean_conv",
    "lean_conv_reference",
]
