"""The shipped models (``leanseg.zoo``) described and chosen: ``leanseg models --pretrained`` and the model
``leanseg predict`` uses when none is given."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from leanseg import zoo
from leanseg.errors import LeanSegError

TRAIN_OUT = Path("runs/leanseg")  # `leanseg train`'s default --out: its best.safetensors is "the last trained"
# the zoo model for each input kind, used when no model is given and no trained checkpoint fits
KIND_DEFAULTS = {"segy": "faults", "image": "em-membrane"}
# how to train a model for each input kind, named in the error when none fits
TRAIN_HINTS = {"nifti": "leanseg train -d Task04_Hippocampus/ (any MSD or nnU-Net v2 dataset folder)",
               "folder": "leanseg train --task brats -d BraTS2021_TrainingData/",
               "segy": "leanseg train --task faults --synthetic 200", "image": "leanseg train --task seg2d -d slices/"}
TRAIN_HINT = TRAIN_HINTS["folder"]


@dataclass(frozen=True)
class ZooModel:
    name: str
    path: Path
    task: str
    input: str  # e.g. "3D, 1 channel (amplitude)"
    weights: int
    size: int  # bytes on disk
    summary: str  # the first sentence of the card, up to a colon


def _summary(card: Path) -> str:
    """The first sentence of the card's first paragraph that is not a heading."""
    if not card.is_file():
        return "(no model card)"
    paragraph: list[str] = []
    for line in card.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            paragraph.append(line)
        elif paragraph:
            break
    text = " ".join(paragraph)
    return text.split(": ")[0].split(". ")[0].rstrip(".") if text else ""


def describe() -> list[ZooModel]:
    """Every shipped model, read from its checkpoint header (no weights are loaded) and its card."""
    from safetensors import safe_open

    from leanseg.checkpoint import read_meta

    rows = []
    for name in zoo.names():
        path = zoo.ZOO_DIR / f"{name}.safetensors"
        meta = read_meta(path)
        with safe_open(str(path), "np") as f:
            weights = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
        channels = f"{len(meta.channels)} channel{'s' * (len(meta.channels) != 1)} ({', '.join(meta.channels)})"
        rows.append(ZooModel(name, path, meta.task or "?", f"{meta.spatial_dims}D, {channels}", weights,
                             path.stat().st_size, _summary(path.with_suffix(".md"))))
    return rows


def table() -> str:
    """The ``leanseg models --pretrained`` listing."""
    rows = describe()
    if not rows:
        return f"no pretrained models installed (looked in {zoo.ZOO_DIR})"
    head = ("name", "task", "input", "weights", "size", "summary")
    body = [(r.name, r.task, r.input, f"{r.weights:,}", f"{r.size / 1024:.0f} kB", r.summary) for r in rows]
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head) - 1)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
                     for row in [head, *body])


def _fits(meta, inputs: list[Path], kind: str) -> bool:
    """Whether a checkpoint's channels fit the input: NIfTI with its channel count, a folder holding files for its
    channel names, a 1-channel 3D model for SEG-Y, a 2D model for an image."""
    if kind == "nifti":
        import nibabel as nib

        if len(inputs) > 1:
            return meta.in_channels == len(inputs) and meta.spatial_dims == 3
        shape = nib.load(str(inputs[0])).shape  # type: ignore[attr-defined]  # a NIfTI image has a shape
        return meta.spatial_dims == 3 and meta.in_channels == (shape[3] if len(shape) == 4 else 1)
    if kind == "folder":
        from leanseg.io import find_case_files

        try:
            find_case_files(inputs[0], meta.channels)
        except LeanSegError:
            return False
        return meta.spatial_dims == 3
    if kind == "segy":
        return meta.spatial_dims == 3 and meta.in_channels == 1
    if kind == "image":
        return meta.spatial_dims == 2
    return False


def default_model(inputs: list[Path]) -> tuple[Path, str]:
    """The checkpoint ``leanseg predict`` uses when none is given, and one line saying which and why: the
    ``best.safetensors`` that ``leanseg train`` last wrote to its default folder when its channels fit the input,
    else the zoo model for the input's kind."""
    from leanseg.checkpoint import read_meta
    from leanseg.io import kind_of

    kind = kind_of(inputs[0])
    trained = TRAIN_OUT / "best.safetensors"  # relative: the run folder of the current folder
    why_not = f"no {trained.resolve()}"
    if trained.is_file():
        try:
            meta = read_meta(trained)
            if _fits(meta, inputs, kind):
                return trained, f"using {trained} (the model leanseg train last wrote; task {meta.task})"
            why_not = (f"{trained.resolve()} (task {meta.task}) takes {meta.in_channels} channel(s) "
                       f"{'(' + ', '.join(meta.channels) + ') ' if meta.channels else ''}in "
                       f"{meta.spatial_dims}D, which this input does not give")
        except (LeanSegError, OSError):
            pass  # an unreadable or foreign input is reported by predict itself, with its own message
    name = KIND_DEFAULTS.get(kind)
    if name is not None and (zoo.ZOO_DIR / f"{name}.safetensors").is_file():
        return zoo.ZOO_DIR / f"{name}.safetensors", f"using the pretrained zoo model {name!r} for this {kind} input"
    shipped = ", ".join(zoo.names()) or "none installed"
    raise LeanSegError(f"{inputs[0]}: no model given (-m), none in the zoo for a {kind} input (zoo: {shipped}), and "
                       f"{why_not}; give -m (a checkpoint or a zoo name) or train one, e.g. "
                       f"`{TRAIN_HINTS.get(kind, TRAIN_HINT)}`")


__all__ = ["KIND_DEFAULTS", "TRAIN_OUT", "ZooModel", "default_model", "describe", "table"]
