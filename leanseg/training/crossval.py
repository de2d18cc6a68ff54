"""A cross-validation scored as nnU-Net scores one: every fold's checkpoint predicts that fold's validation cases
(never seen in its training), the Dice of all of them together is the CV figure, and component rules are chosen
on those out-of-fold predictions and stored in every fold's checkpoint, so the folds' ensemble applies them.

``leanseg crossval RUNS -d DATA`` runs it on the output folder of ``leanseg train -d DATA -o RUNS --fold K``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leanseg.errors import LeanSegError
from leanseg.training.splits import FOLDS, read_splits


@dataclass
class CrossValResult:
    folds: list[int]
    per_case: list[dict] = field(default_factory=list)  # {"id", "fold", "dice_<name>": ...}
    mean: dict = field(default_factory=dict)  # dice_<name> over every case of every fold
    per_fold: dict = field(default_factory=dict)  # fold -> {dice_<name>: mean}
    postprocess: dict = field(default_factory=dict)  # rules chosen and the mean Dice before/after
    seconds_per_case: float = float("nan")
    tta: bool = False

    def to_json(self) -> dict:
        return {"folds": self.folds, "mean": self.mean, "per_fold": {str(k): v for k, v in self.per_fold.items()},
                "postprocess": self.postprocess, "seconds_per_case": self.seconds_per_case, "tta": self.tta,
                "per_case": self.per_case}


def crossval(runs: str | os.PathLike, data: str | os.PathLike, task: str = "dataset", postprocess: bool = False,
             progress: bool = True, tta: bool = False) -> CrossValResult:
    """Score the folds under ``runs`` (``fold_K/best.safetensors`` and ``splits.json``) on their validation cases
    of ``data``; with ``postprocess``, choose component rules on all those predictions and store them in each
    fold's best.safetensors; ``tta``: average over every mirroring, as ``leanseg predict --tta``. Writes
    ``runs/crossval.json``."""
    import torch
    from tqdm.auto import tqdm

    from leanseg.checkpoint import load_model, save_model
    from leanseg.inference import sliding_window_predict
    from leanseg.io import atomic_path
    from leanseg.postprocess import Postprocess, select_postprocess
    from leanseg.tasks import prepared_task

    runs = Path(runs)
    splits = read_splits(runs / "splits.json") if (runs / "splits.json").is_file() else None
    if splits is None:
        raise LeanSegError(f"{runs}: no splits.json; train folds first (leanseg train -d DATA -o {runs} --fold K)")
    folds = [k for k in range(FOLDS) if (runs / f"fold_{k}" / "best.safetensors").is_file()]
    if not folds:
        raise LeanSegError(f"{runs}: no fold_K/best.safetensors; train folds first")
    plan = runs / f"fold_{folds[0]}" / "plan.json"
    options: dict = {"plan": plan} if task == "dataset" and plan.is_file() else {}
    t, cases = prepared_task(task, data, workdir=runs, progress=progress, **options)  # the fingerprint training cached
    by_id = {str(c["id"]): c for c in cases}
    transform = t.transforms(train=False)
    manager = t.label_manager
    result = CrossValResult(folds=folds, tta=tta)
    predictions, references, rows = [], [], []
    seconds = []
    for k in folds:
        net, meta = load_model(runs / f"fold_{k}" / "best.safetensors")
        window = meta.window or t.config.window
        missing = [i for i in splits[k]["val"] if i not in by_id]
        if missing:
            raise LeanSegError(f"{runs / 'splits.json'}: fold {k} validates on cases {data} lacks: {missing[:3]}")
        for case_id in tqdm(splits[k]["val"], desc=f"fold {k}", disable=not progress, leave=False):
            item = transform(by_id[case_id])
            image, target = torch.as_tensor(item["image"])[None], torch.as_tensor(item["label"])[None]
            t0 = time.perf_counter()
            with torch.inference_mode():
                probs = sliding_window_predict(net, image, window, activation=manager.activation, tta=tta)[0]
            label_map = manager.decode(probs)
            seconds.append(time.perf_counter() - t0)
            predictions.append(label_map)
            references.append(manager.decode(manager.target_masks(target)[0]))
            rows.append({"id": case_id, "fold": k} | t.score_case(label_map, target))
    result.per_case = rows
    keys = [k for k in rows[0] if k.startswith("dice_")]
    result.mean = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    result.per_fold = {f: {k: float(np.nanmean([r[k] for r in rows if r["fold"] == f])) for k in keys}
                       for f in folds}
    result.seconds_per_case = float(np.median(seconds))
    if postprocess:
        rules, scores = select_postprocess(predictions, references, manager)
        result.postprocess = {"rules": rules.to_json()} | scores
        for k in folds:
            path = runs / f"fold_{k}" / "best.safetensors"
            net, meta = load_model(path)
            save_model(net, path, meta.replace(postprocess=Postprocess.parse(rules.to_json(), manager)))
    with atomic_path(runs / "crossval.json") as tmp:
        tmp.write_text(json.dumps(result.to_json(), indent=1) + "\n")
    return result


def format_crossval(result: CrossValResult) -> str:
    names = list(result.mean)
    head = "fold  " + "  ".join(n[5:].rjust(10) for n in names) + "   mean"
    lines = [head]
    for f, scores in result.per_fold.items():
        lines.append(f"{f:>4}  " + "  ".join(f"{scores[n]:10.4f}" for n in names)
                     + f" {np.mean([scores[n] for n in names]):7.4f}")
    lines.append(" all  " + "  ".join(f"{result.mean[n]:10.4f}" for n in names)
                 + f" {np.mean(list(result.mean.values())):7.4f}")
    lines.append(f"{len(result.per_case)} cases, each predicted by the fold that did not train on it"
                 f"{' (mirroring TTA)' if result.tta else ''}; "
                 f"{result.seconds_per_case:.3f} s per case (median, the network's sliding window)")
    if result.postprocess:
        pp = result.postprocess
        lines.append(f"postprocess {json.dumps(pp['rules'])}: mean Dice {pp['before']:.4f} -> {pp['after']:.4f} "
                     "(stored in every fold's best.safetensors)")
    return "\n".join(lines)


__all__ = ["CrossValResult", "crossval", "format_crossval"]
