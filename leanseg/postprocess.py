"""Connected-component postprocessing of label maps, per class or region, and its choice on validation data.

Three rules, named by the classes or regions of a checkpoint's ``LabelManager`` (JSON, as stored in a checkpoint's
``postprocess`` field and given to ``--postprocess``)::

    {"largest": ["WT"],          # keep only the largest connected component of each named class/region
     "min_size": {"ET": 20},     # remove components of fewer voxels than this
     "demote": {"ET": 500}}      # BraTS: a region with fewer voxels than this in all becomes its enclosing region

Components are face-connected (scipy.ndimage.label's default structure); removed voxels become background (0).
A region is removed as a whole, inner regions included (a removed WT component takes its TC and ET with it), as
nnU-Net does for regions. ``demote`` is BraTS's rule for small enhancing tumours: fewer ET voxels than the threshold
are usually false positives, so they are painted as the enclosing region without ET (TC minus ET: necrosis). It needs
regions and an enclosing (earlier) region.

``select_postprocess`` chooses rules as nnU-Net does: on validation predictions and references, each candidate rule
per class/region is kept only if it raises the mean Dice over cases and scored classes/regions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leanseg.errors import LeanSegError
from leanseg.labels import LabelManager

RULES = ("largest", "min_size", "demote")
# Candidates tried by select_postprocess, in voxels. min_size: nnU-Net-like small-blob removal; demote: BraTS
# challenge solutions used thresholds of a few hundred ET voxels (1 mm grid).
MIN_SIZE_CANDIDATES = (10, 50, 200)
DEMOTE_CANDIDATES = (50, 100, 200, 500, 1000)


@dataclass(frozen=True)
class Postprocess:
    """Postprocessing rules by class/region name; empty means none. Build it with :meth:`parse` (validated)."""

    largest: tuple[str, ...] = ()
    min_size: dict[str, int] = field(default_factory=dict)
    demote: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.largest or self.min_size or self.demote)

    @classmethod
    def parse(cls, spec, labels: LabelManager | None = None, where: str = "postprocess") -> Postprocess:
        """From JSON text, a dict, None/'none' (no rules) or a Postprocess; names are checked against ``labels``."""
        if isinstance(spec, Postprocess):
            rules = spec
        else:
            if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("none", "")):
                spec = {}
            if isinstance(spec, str):
                try:
                    spec = json.loads(spec)
                except json.JSONDecodeError as err:
                    raise LeanSegError(f"{where}: not JSON ({err.msg}); give an object such as "
                                       '\'{"largest": ["WT"]}\' or \'none\'') from None
            if not isinstance(spec, Mapping):
                raise LeanSegError(f"{where}: expected a JSON object with {', '.join(RULES)}, got {spec!r}")
            unknown = sorted(set(spec) - set(RULES))
            if unknown:
                raise LeanSegError(f"{where}: unknown rules {unknown}; the rules are {', '.join(RULES)}")
            largest = spec.get("largest", [])
            if isinstance(largest, str) or not isinstance(largest, Sequence) or \
                    not all(isinstance(n, str) for n in largest):
                raise LeanSegError(f"{where}: 'largest' must be a list of class/region names, got {largest!r}")
            sizes = {rule: _sizes(spec.get(rule, {}), f"{where}: '{rule}'") for rule in ("min_size", "demote")}
            rules = cls(tuple(dict.fromkeys(largest)), sizes["min_size"], sizes["demote"])
        if labels is not None:
            rules.check(labels, where)
        return rules

    def check(self, labels: LabelManager, where: str = "postprocess") -> None:
        """A one-line error when a rule names a class/region ``labels`` does not have, or cannot demote it."""
        for rule, names in (("largest", self.largest), ("min_size", self.min_size), ("demote", self.demote)):
            for name in names:
                if name not in labels.names:
                    raise LeanSegError(f"{where}: '{rule}' names {name!r}, which is not one of this model's "
                                       f"{labels.kind} ({', '.join(labels.names)})")
        for name in self.demote:
            if not labels.sigmoid or labels.names.index(name) == 0:
                raise LeanSegError(f"{where}: 'demote' needs a region inside another region; {name!r} has none "
                                   f"({labels.kind}: {', '.join(labels.names)})")

    def replace(self, **changes) -> Postprocess:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        out: dict = {}
        if self.largest:
            out["largest"] = list(self.largest)
        if self.min_size:
            out["min_size"] = dict(self.min_size)
        if self.demote:
            out["demote"] = dict(self.demote)
        return out

    def apply(self, label_map: np.ndarray, labels: LabelManager) -> np.ndarray:
        """A postprocessed copy of ``label_map`` (``(*spatial)`` label values as ``labels.decode`` writes them)."""
        out = np.array(label_map, copy=True)
        if not self:
            return out
        self.check(labels)
        box = _box(out != 0)  # every rule acts inside the labelled voxels' bounding box: much less to label
        if box is not None:
            out[box] = self._apply(out[box], labels)
        return out

    def _apply(self, out: np.ndarray, labels: LabelManager) -> np.ndarray:
        groups = labels.regions if labels.sigmoid else {n: (v,) for n, v in labels.labels.items()}
        paint = dict(zip(labels.names, labels.paint, strict=True)) if labels.sigmoid else {}
        for name in labels.names:  # in output order: outer regions first, so inner rules see what is left
            values = list(groups[name])
            if name in self.demote:
                mask = np.isin(out, values)
                if 0 < int(mask.sum()) < self.demote[name]:
                    outer = labels.names[labels.names.index(name) - 1]
                    out[mask] = paint[outer]
            if name in self.largest:
                out[_remove_small(np.isin(out, values), keep_largest=True)] = 0
            if name in self.min_size:
                out[_remove_small(np.isin(out, values), min_voxels=self.min_size[name])] = 0
        return out


def _box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of ``mask``'s voxels, or None when it has none."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _sizes(value, where: str) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise LeanSegError(f"{where} must map names to voxel counts, e.g. {{\"ET\": 500}}, got {value!r}")
    for name, n in value.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise LeanSegError(f"{where}[{name!r}] must be a positive number of voxels, got {n!r}")
    return {str(k): int(v) for k, v in value.items()}


def _remove_small(mask: np.ndarray, keep_largest: bool = False, min_voxels: int = 0) -> np.ndarray:
    """The voxels of ``mask`` in components to remove: all but the largest, or those below ``min_voxels``."""
    from scipy import ndimage

    components, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(components.ravel())  # sizes[0] is the background
    sizes[0] = 0
    if keep_largest:
        drop = np.ones(count + 1, bool)
        drop[int(np.argmax(sizes))] = False
    else:
        drop = sizes < min_voxels
    drop[0] = False
    return drop[components]


# ------------------------------------------------------------------------------------------- choice on validation
def dice_per_name(pred: np.ndarray, ref: np.ndarray, labels: LabelManager) -> dict[str, float]:
    """Dice of every scored class/region (1 where both are empty, as leanseg.metrics reports it)."""
    out = {}
    for name, values in labels.scored.items():
        p, r = np.isin(pred, values), np.isin(ref, values)
        total = int(p.sum()) + int(r.sum())
        out[name] = 1.0 if total == 0 else 2.0 * int((p & r).sum()) / total
    return out


def _mean_dice(pairs, labels: LabelManager, rules: Postprocess) -> float:
    scores = [dice_per_name(rules.apply(p, labels), r, labels) for p, r in pairs]
    return float(np.mean([v for s in scores for v in s.values()])) if scores else float("nan")


def _best(pairs, labels: LabelManager, rules: Postprocess, score: float, candidates: list[Postprocess]):
    """The candidate with the highest mean Dice if it beats ``score``, else ``rules``; and its score."""
    for candidate in candidates:
        new = _mean_dice(pairs, labels, candidate)
        if new > score + 1e-9:
            rules, score = candidate, new
    return rules, score


def select_postprocess(predictions: Sequence[np.ndarray] | str | os.PathLike,
                       references: Sequence[np.ndarray] | str | os.PathLike,
                       labels: LabelManager) -> tuple[Postprocess, dict[str, float]]:
    """Rules that raise mean Dice on validation cases, chosen greedily (nnU-Net's procedure, extended).

    ``predictions``/``references``: label maps as arrays in the same order, or two folders of NIfTI files paired
    by name (``case.nii.gz`` with ``case.nii.gz`` or ``case_pred.nii.gz``).

    For each class/region in output order: keep the largest component if that raises the mean Dice; else remove
    components below the best of ``MIN_SIZE_CANDIDATES`` if that raises it; then, for a region inside another,
    the best ``demote`` threshold of ``DEMOTE_CANDIDATES`` if it raises it. Returns the rules and
    ``{"before": mean Dice, "after": mean Dice}``.
    """
    if isinstance(predictions, str | os.PathLike) and isinstance(references, str | os.PathLike):
        predictions, references = read_pairs(predictions, references, labels)
    elif isinstance(predictions, str | os.PathLike) or isinstance(references, str | os.PathLike):
        raise LeanSegError("give predictions and references both as folders or both as label maps")
    if len(predictions) != len(references) or not predictions:
        raise LeanSegError(f"select_postprocess needs as many references as predictions (at least one), got "
                           f"{len(predictions)} and {len(references)}")
    pairs = list(zip(predictions, references, strict=True))
    for i, (p, r) in enumerate(pairs):
        if p.shape != r.shape:
            raise LeanSegError(f"case {i}: prediction shape {p.shape} differs from the reference's {r.shape}")
    # Dice and the rules only see labelled voxels: score each case inside the bounding box of both maps' labels
    boxes = [_box((p != 0) | (r != 0)) for p, r in pairs]
    pairs = [(p[b], r[b]) if b is not None else (p, r) for (p, r), b in zip(pairs, boxes, strict=True)]
    rules = Postprocess()
    before = best = _mean_dice(pairs, labels, rules)
    for index, name in enumerate(labels.names):
        # one component rule per name (the largest, or a size floor), then the demotion on top of what was kept
        rules, best = _best(pairs, labels, rules, best, [rules.replace(largest=rules.largest + (name,))]
                            + [rules.replace(min_size=rules.min_size | {name: n}) for n in MIN_SIZE_CANDIDATES])
        if labels.sigmoid and index > 0:
            rules, best = _best(pairs, labels, rules, best,
                                [rules.replace(demote=rules.demote | {name: n}) for n in DEMOTE_CANDIDATES])
    return rules, {"before": before, "after": best}


def read_pairs(predictions: str | os.PathLike, references: str | os.PathLike,
               labels: LabelManager) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Label maps of two folders paired by file name (a prediction may add ``_pred``), checked against ``labels``."""
    from leanseg.io import read_volume, stem
    from leanseg.io.nifti import NIFTI_SUFFIXES

    found = []
    for folder in (Path(predictions), Path(references)):
        if not folder.is_dir():
            raise LeanSegError(f"{folder}: no such folder")
        found.append({stem(p).removesuffix("_pred"): p for p in sorted(folder.iterdir())
                      if p.name.lower().endswith(NIFTI_SUFFIXES)})
    names = sorted(set(found[0]) & set(found[1]))
    if not names:
        raise LeanSegError(f"{predictions}: no NIfTI file pairs with one in {references} by name")
    pairs: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    for name in names:
        for side, table in zip(pairs, found, strict=True):
            array, _ = read_volume(table[name])
            if len(array) != 1:
                raise LeanSegError(f"{table[name]}: {len(array)} channels; a label map has one")
            labels.check(array[0], table[name])
            side.append(array[0].astype(np.int64))
    return pairs


__all__ = ["Postprocess", "dice_per_name", "read_pairs", "select_postprocess"]
