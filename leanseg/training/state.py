"""Resume state without pickle: one safetensors file whose tensors are the model weights, the optimiser's
moment buffers and the RNG states, and whose header metadata holds the rest as JSON (epoch, param groups,
scheduler, Python and numpy RNG scalars). One file, written to a temporary name and renamed, so a run killed
while saving leaves the previous state intact.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from leanseg.errors import LeanSegError


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """save_file to ``path`` via a temporary sibling and os.replace (atomic on POSIX and Windows)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        # clone: safetensors refuses tensors that share memory, and some networks (MONAI's DynUNet) reach one
        # module under two names in their state_dict
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(tmp),
                  metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    # the legacy global RNG is what third-party code draws from; legacy=True makes it a tuple
    np_state: tuple = np.random.get_state(legacy=True)  # type: ignore[assignment]  # noqa: NPY002
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available():
        tensors |= {f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    py = random.getstate()
    scalars = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
               "python": [py[0], list(py[1]), py[2]]}
    return tensors, scalars


def _set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    name, pos, has_gauss, cached = scalars["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = scalars["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_state(path: Path, model: torch.nn.Module, optimizer, scheduler, epoch: int, extra: dict) -> None:
    """Everything --resume needs after ``epoch`` (0-based, finished)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict] = {}
    for idx, slot in opt["state"].items():
        for key, value in slot.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                opt_scalars.setdefault(str(idx), {})[key] = value
    rng_tensors, rng_scalars = _rng_state()
    tensors |= rng_tensors
    meta = {"epoch": epoch, "param_groups": opt["param_groups"], "optim_scalars": opt_scalars,
            "scheduler": scheduler.state_dict(), "rng": rng_scalars, "extra": extra}
    atomic_save(tensors, path, {"leanseg_train_state": json.dumps(meta)})


def load_state(path: Path, model: torch.nn.Module, optimizer, scheduler) -> tuple[int, dict]:
    """Restore model, optimiser, scheduler and RNG from ``path``; returns (finished epoch, extra)."""
    from safetensors import safe_open

    if not path.exists():
        raise LeanSegError(f"{path}: no training state to resume from (run without --resume first)")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["leanseg_train_state"])
        tensors = load_file(str(path))
    except Exception as err:
        raise LeanSegError(f"{path}: not a readable leanseg training state ({err})") from err
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise LeanSegError(f"{path}: the saved model does not match this run's model ({str(err).splitlines()[0]})"
                           ) from None
    try:  # a hand-edited or foreign state: any missing key or wrong type is one error naming the file
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        for idx, slot in meta["optim_scalars"].items():
            state.setdefault(int(idx), {}).update(slot)
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        scheduler.load_state_dict(meta["scheduler"])
        _set_rng_state(tensors, meta["rng"])
        epoch, extra = int(meta["epoch"]), dict(meta["extra"])
    except (KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError) as err:
        raise LeanSegError(f"{path}: damaged training state ({type(err).__name__}: {err})") from None
    return epoch, extra
