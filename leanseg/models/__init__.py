"""Lean networks (U-Nets, the paper's ResNets) and their registry."""

from leanseg.models._registry import available, create, register

__all__ = ["available", "create", "register"]
