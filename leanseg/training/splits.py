"""Cross-validation splits as nnU-Net users know them: a seeded 5-fold split of the case ids, written once to
``splits.json`` in the experiment folder and reused by every fold (and by whoever scores the folds later)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from leanseg.errors import LeanSegError

FOLDS = 5
SEED = 12345  # the split's own seed (nnU-Net's): independent of --seed, so folds of runs with other seeds agree


def make_splits(ids: list[str], seed: int = SEED, folds: int = FOLDS) -> list[dict]:
    """A seeded k-fold split of the sorted case ids: fold k validates on its part and trains on the rest."""
    ordered = sorted(ids)
    if len(ordered) < folds:
        raise LeanSegError(f"{folds}-fold cross-validation needs at least {folds} cases, the data has {len(ordered)}")
    order = np.random.default_rng(seed).permutation(len(ordered))
    parts = np.array_split(order, folds)
    return [{"train": sorted(ordered[i] for j, p in enumerate(parts) if j != k for i in p),
             "val": sorted(ordered[i] for i in parts[k])} for k in range(folds)]


def read_splits(path: Path) -> list[dict]:
    """A splits.json: a list of {"train": [ids], "val": [ids]}, one per fold; one-line errors otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LeanSegError(f"{path}: not a readable splits file ({err})") from None
    if not isinstance(data, list) or len(data) != FOLDS or not all(
            isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("val"), list)
            and all(isinstance(i, str) for i in s["train"] + s["val"]) for s in data):
        raise LeanSegError(f"{path}: expected a list of {FOLDS} folds {{\"train\": [ids], \"val\": [ids]}}")
    return data


def load_splits(path: Path, ids: list[str], write: bool = True) -> list[dict]:
    """splits.json at ``path`` when it exists (checked against ``ids``), else made from them and (``write``)
    written atomically."""
    from leanseg.io import atomic_path

    path = Path(path)
    if path.is_file():
        splits = read_splits(path)
        listed = {i for s in splits for i in s["train"] + s["val"]}
        if listed != set(ids):
            other = sorted(listed ^ set(ids))
            raise LeanSegError(f"{path}: its folds list other cases than the data ({', '.join(other[:3])}...); it "
                               "belongs to another dataset: choose another --out or delete it")
        return splits
    splits = make_splits(ids)
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(splits, indent=1) + "\n")
    return splits


__all__ = ["FOLDS", "load_splits", "make_splits", "read_splits"]
