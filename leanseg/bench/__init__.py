"""Benchmark code behind ``leanseg bench ...`` (imports torch; the CLI imports it lazily)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from leanseg.errors import LeanSegError


def check_counts(minimum: int = 1, **counts) -> None:
    """Every named count (``repeats=0``, ``cases=-3``, each item of a sequence such as ``channels=[16, 0]``) is an
    integer of at least ``minimum``, or a one-line error naming its flag."""
    for name, value in counts.items():
        if value is None:
            continue
        many = isinstance(value, list | tuple)
        for item in value if many else [value]:
            if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
                what = "integers" if many else "an integer"
                raise LeanSegError(f"--{name.replace('_', '-')} must be {what} of at least {minimum}, got {value!r}")


def check_number(name: str, value, low: float, high: float = math.inf) -> None:
    """A finite number in [low, high], or a one-line error naming its flag."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise LeanSegError(f"--{name.replace('_', '-')} must be a number from {low} to {high}, got {value!r}")


def check_workdir(workdir: str | os.PathLike | None) -> None:
    """A --workdir that exists and takes a file (benchmarks write their temporary cases there)."""
    if workdir is None:
        return
    folder = Path(workdir)
    if not folder.is_dir():
        raise LeanSegError(f"{folder}: --workdir is not an existing folder")
    if not os.access(folder, os.W_OK):
        raise LeanSegError(f"{folder}: --workdir is not writable")

