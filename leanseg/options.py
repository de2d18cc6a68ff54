"""The one home for user-chosen options: look-up with "did you mean", string enums, windows and devices.

Every "unknown X 'y'; did you mean 'z'?" in leanseg comes from ``look_up_option``. The module imports no torch
at import time (the CLI parses options before anything heavy loads); ``resolve_device`` imports it when called.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar, overload

from leanseg.errors import LeanSegError

if TYPE_CHECKING:
    import torch

E = TypeVar("E", bound=Enum)
V = TypeVar("V")


class ConvKind(str, Enum):
    """The 3x3(x3) convolution a block uses: the lean operator, or the ordinary dense one (the twin)."""

    LEAN = "lean"
    DENSE = "dense"


class UpMode(str, Enum):
    """How a decoder level upsamples: conv on the coarse grid + interpolation, or a 2x transposed conv."""

    INTERP = "interp"
    TRANSPOSE = "transpose"


class DownMode(str, Enum):
    """How an encoder level halves the grid: a stride-2 conv, or 2x pooling then a stride-1 conv."""

    CONV = "conv"
    MAXPOOL = "maxpool"
    AVGPOOL = "avgpool"


class Schedule(str, Enum):
    """Learning-rate schedule: cosine to zero, or nnU-Net's poly (1 - t/T)^0.9."""

    COSINE = "cosine"
    POLY = "poly"


class Norm(str, Enum):
    """Normalisation layers by name (the classes are picked per dimension in leanseg.nn.factories.NORMS)."""

    INSTANCE = "instance"
    BATCH = "batch"
    GROUP = "group"
    NONE = "none"


def _names(choices: Iterable[Any]) -> list[str]:
    return [c.value if isinstance(c, Enum) else str(c) for c in choices]


def _hint(value: str, names: list[str]) -> str:
    close = difflib.get_close_matches(value, names, n=2, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "choose from " + ", ".join(repr(n) for n in names)


@overload
def look_up_option(value: Any, choices: type[E], *, what: str, key: Any = ...) -> E: ...
@overload
def look_up_option(value: Any, choices: Mapping[str, V], *, what: str, key: Any = ...) -> V: ...
@overload
def look_up_option(value: Any, choices: Iterable[str], *, what: str, key: Any = ...) -> str: ...
def look_up_option(value: Any, choices: Any, *, what: str, key: Any = None) -> Any:
    """``value`` among ``choices``, or a LeanSegError "unknown <what> 'value'; did you mean '...'?".

    ``choices`` is a string Enum class (returns the member), a mapping from names (returns the mapped value) or
    an iterable of names (returns the name). ``key`` normalises ``value`` before the look-up (e.g. case and
    underscores); when nothing is close, the error lists every choice.
    """
    if isinstance(value, Enum) and isinstance(choices, type) and isinstance(value, choices):
        return value
    name = key(value) if key is not None and isinstance(value, str) else value
    if isinstance(choices, type) and issubclass(choices, Enum):
        for member in choices:
            if name == member.value:
                return member
        names = _names(choices)
    elif isinstance(choices, Mapping):
        if isinstance(name, str) and name in choices:
            return choices[name]
        names = _names(choices)
    else:
        names = _names(choices)
        if name in names:
            return name
    raise LeanSegError(f"unknown {what} {value!r}; {_hint(str(name), names)}")


def parse_ints(text: str | int | Sequence[int], what: str) -> tuple[int, ...]:
    """'128' | '128,128,96' | '4x128x128' | 128 | (128, 96) -> positive integers; LeanSegError naming ``what``."""
    if isinstance(text, str):
        try:
            values = tuple(int(v) for v in text.replace("x", ",").split(","))
        except ValueError:
            raise LeanSegError(f"{what} {text!r}: expected an integer or comma-separated integers") from None
    elif isinstance(text, int) and not isinstance(text, bool):
        values = (text,)
    elif isinstance(text, Sequence) and all(isinstance(v, int) and not isinstance(v, bool) for v in text):
        values = tuple(int(v) for v in text)
    else:
        raise LeanSegError(f"{what} {text!r}: expected an integer or a sequence of integers")
    if not values or min(values) < 1:
        raise LeanSegError(f"{what} {text!r}: sizes must be positive integers")
    return values


def at_least(value: float, minimum: float, what: str) -> float:
    """``value`` when it is a finite number of at least ``minimum``, else a one-line error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < minimum:
        raise LeanSegError(f"{what} must be at least {minimum}, got {value!r}")
    return value


def parse_window(
    window: str | int | Sequence[int], ndim: int | None = None, *, what: str = "window"
) -> tuple[int, ...]:
    """A sliding-window or patch size: '128' | '128,128,96' | 128 | (128, 128, 96) -> a tuple of positive sizes.

    With ``ndim``, one size is repeated on every axis and any other count but ``ndim`` is an error; without it
    (the dimension is not known yet) the sizes are returned as given.
    """
    sizes = parse_ints(window, what)
    if ndim is None:
        return sizes
    if len(sizes) == 1:
        return sizes * ndim
    if len(sizes) != ndim:
        raise LeanSegError(f"{what} {window!r}: needs 1 or {ndim} sizes for {ndim}D data, got {len(sizes)}")
    return sizes


_DEVICES = ("cpu", "cuda", "auto")

# Windows of one voxel, or overlaps near 1, would run a window per voxel: hours for one volume. nnU-Net and MONAI
# use 0.5; 0.9 already runs 1000x the windows of 0 in 3D. (Here, not in leanseg.inference: the CLI's help says it.)
MAX_OVERLAP = 0.9


def resolve_device(device: str | torch.device | None = "cpu", *, what: str = "--device") -> torch.device:
    """'cpu' (the default), 'cuda' or 'cuda:N' (an error when there is no such device), 'auto' (cuda when there
    is one). Other device types ('mps', 'meta', ...) are not supported by leanseg's kernels and are refused."""
    import torch

    text = "cpu" if device is None else str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda"):
        if kind in ("mps", "meta", "xpu", "hip", "xla", "vulkan", "ipu", "hpu", "mtia"):
            raise LeanSegError(f"{what} {text!r}: not supported; use cpu, cuda, cuda:N or auto")
        look_up_option(kind, _DEVICES, what="device")
    if index and (kind != "cuda" or not index.isdigit()):
        raise LeanSegError(f"{what} {text!r}: expected cpu, cuda, cuda:N or auto")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise LeanSegError(f"{what} {text}: no CUDA device is available; use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise LeanSegError(f"{what} {text}: there are only {torch.cuda.device_count()} CUDA devices")
    return torch.device(text)
