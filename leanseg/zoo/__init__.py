"""The model zoo: pretrained checkpoints shipped inside the package, each ``NAME.safetensors`` (an ordinary
leanseg checkpoint) with its model card ``NAME.md`` beside it, in this folder.

A zoo name is accepted wherever a checkpoint path is (``leanseg predict -m faults``, ``leanseg.predict(...,
model="faults")``, ``leanseg.load_model("faults")``); a path that exists wins over a name. Adding a model is
dropping the two files here: nothing lists them by hand. This module only maps names to files (so that
``leanseg.checkpoint`` can use it); ``leanseg.pretrained`` lists the models and picks one when none is given.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from leanseg.errors import LeanSegError

ZOO_DIR = Path(__file__).parent  # read at call time, so tests can point it elsewhere


def names() -> list[str]:
    """Names of the shipped models, sorted."""
    return sorted(p.name[: -len(".safetensors")] for p in ZOO_DIR.glob("*.safetensors"))


def path_of(name: str) -> Path:
    """The checkpoint file of zoo model ``name``; an unknown name gets a 'did you mean' error."""
    path = ZOO_DIR / f"{name}.safetensors"
    if path.is_file():
        return path
    raise LeanSegError(_unknown(name))


def _unknown(name: str) -> str:
    known = names()
    close = difflib.get_close_matches(name, known, n=2)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    zoo = ", ".join(known) if known else "none installed"
    return f"{name}: no such checkpoint file and no such zoo model; {hint}(zoo: {zoo}; see leanseg models --pretrained)"


def resolve(model: str | os.PathLike) -> Path:
    """A checkpoint path: ``model`` itself when it is a file, else the zoo model of that name."""
    if not isinstance(model, str | os.PathLike):
        raise LeanSegError(f"a checkpoint is a path or a zoo name, got {type(model).__name__} {model!r}")
    path = Path(model)
    if path.is_file():
        return path
    name = str(model)
    if name.endswith(".safetensors") or os.sep in name or (os.altsep and os.altsep in name):
        raise LeanSegError(f"{path}: checkpoint not found")  # clearly a path: no zoo name looks like this
    return path_of(name)


__all__ = ["ZOO_DIR", "names", "path_of", "resolve"]
