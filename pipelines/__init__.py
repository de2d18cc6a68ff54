"""Tasks: one module per task (data discovery, labels, transforms, loss, metrics, defaults).

This file is a plain data registry and imports no torch, so ``leanseg --help`` and ``leanseg train --help``
stay instant and the CLI's task choices come from the same table the code uses. ``get_task`` imports the
task module only when it is asked for.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from leanseg.options import look_up_option

# name -> (module, one-line description)
TASKS: dict[str, tuple[str, str]] = {
    "brats": ("pipelines.brats", "brain tumour MRI (BraTS 2020/2021/2023, MSD Task01): WT/TC/ET regions"),
    "faults": ("pipelines.faults", "binary fault segmentation of 3D seismic cubes (FaultSeg3D-style)"),
    "seg2d": ("pipelines.seg2d", "2D segmentation from a folder of images and masks with matching names"),
    "cifar": ("pipelines.cifar", "CIFAR-10/100 classification with the paper's LeanResNet"),
}


def available() -> list[str]:
    """Task names, sorted."""
    return sorted(TASKS)


def describe() -> dict[str, str]:
    """Task name -> one-line description, without importing any task module."""
    return {name: desc for name, (_, desc) in sorted(TASKS.items())}


def get_task(name: str) -> ModuleType:
    """Import and return the module of task ``name``; an unknown name gets a 'did you mean' error."""
    module, _ = look_up_option(name, TASKS, what="task")
    return import_module(module)
