"""Lean convolution layers and the layer factories shared by 2D and 3D models."""

from leanseg.nn.functional import dense_weight, lean_conv, lean_conv_reference
from leanseg.nn.lean_conv import LeanConv, LeanReport, lean

__all__ = ["LeanConv", "LeanReport", "dense_weight", "lean", "lean_conv", "lean_conv_reference"]
