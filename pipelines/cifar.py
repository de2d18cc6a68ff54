"""CIFAR-10/100 classification with the paper's LeanResNet (its Table 1), where the user has the data.

The data are the usual python-pickle batches (cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta;
cifar-100-python: train, test, meta). Pickles can run code when loaded, so they are read with an unpickler that
refuses every global except the handful numpy needs to rebuild arrays; anything else in a file is an error.
The official test split is the validation set.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leanseg.errors import LeanSegError
from leanseg.tasks import Task, TaskConfig

# the only globals a CIFAR batch needs: numpy's array reconstruction (under its numpy 1 and numpy 2 module names)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}
MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 training-set channel statistics, the values everyone uses
STD = (0.2470, 0.2435, 0.2616)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays")
        return super().find_class(module, name)


def load_batch(path: Path) -> dict:
    """A CIFAR batch file as a dict with str keys, through the numpy-only unpickler."""
    try:
        data = _NumpyOnlyUnpickler(io.BytesIO(Path(path).read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise LeanSegError(f"{path}: not a CIFAR python batch ({err})") from None
    if not isinstance(data, dict):
        raise LeanSegError(f"{path}: not a CIFAR python batch (holds a {type(data).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


@dataclass
class CifarConfig(TaskConfig):
    spatial_dims: int = 2
    channels: tuple[str, ...] = ("red", "green", "blue")
    # classes {name: index}; names from batches.meta are not needed to train, CIFAR-100 is detected from the labels
    labels: dict = field(default_factory=lambda: {f"class_{i}": i for i in range(10)})
    epochs: int = 200  # the paper's schedule length for CIFAR
    batch_size: int = 128
    val_batch_size: int = 500
    lr: float = 2e-3
    weight_decay: float = 5e-4  # CIFAR ResNets overfit without it
    model: str = "lean_resnet"
    model_kwargs: dict = field(default_factory=lambda: {"variant": "A"})  # the paper's CIFAR-10 net; C for 100
    val_fraction: float = 0.2  # synthetic data only; real CIFAR uses its test split
    window: tuple[int, ...] = (32, 32)
    synthetic_size: int = 32
    normalization: object = field(default_factory=lambda: {"kind": "fixed", "mean": list(MEAN), "std": list(STD)})


def discover(root: str | Path) -> list[dict]:
    root = Path(root)
    if not root.is_dir():
        raise LeanSegError(f"{root}: not a folder")
    for sub in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if (sub / "data_batch_1").exists() or (sub / "train").is_file():
            root = sub
            break
    ten = [root / f"data_batch_{i}" for i in range(1, 6)] + [root / "test_batch"]
    if (root / "data_batch_1").exists():
        missing = [p.name for p in ten if not p.exists()]
        if missing:
            raise LeanSegError(f"{root}: CIFAR-10 batches missing: {', '.join(missing)}")
        parts = [(p, "test" if p.name == "test_batch" else "train", b"labels") for p in ten]
    elif (root / "train").is_file() and (root / "test").is_file():
        parts = [(root / "train", "train", b"fine_labels"), (root / "test", "test", b"fine_labels")]
    else:
        raise LeanSegError(f"{root}: no CIFAR batches (expected data_batch_1..5 + test_batch, or train + test)")
    cases = []
    for path, split, key in parts:
        batch = load_batch(path)
        images = np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[key.decode()], np.int64)
        cases += [{"image": img, "label": int(lab), "split": split} for img, lab in zip(images, labels, strict=True)]
    return cases


class _ToFloat:
    def __call__(self, case: dict) -> dict:
        return {"image": case["image"].astype(np.float32) / 255, "label": case["label"]}


class CifarTask(Task):
    name = "cifar"
    Config = CifarConfig
    config: CifarConfig

    discover = staticmethod(discover)  # the module's function: folders need no task state

    def configure(self, cases: list[dict]) -> None:
        n = max(c["label"] for c in cases) + 1
        if n > len(self.config.labels):
            k = 100 if n > 10 else 10
            self.config = dataclasses.replace(self.config, labels={f"class_{i}": i for i in range(k)})

    def synthetic(self, n: int, seed: int) -> list[dict]:
        from leanseg.synthetic import cifar_like

        images, labels = cifar_like(np.random.default_rng(seed), n, len(self.config.labels))
        return [{"image": img.transpose(2, 0, 1), "label": int(lab)} for img, lab in zip(images, labels, strict=True)]

    def transforms(self, train: bool):
        """Scale to [0, 1], normalise by the CIFAR statistics; for training, the standard 4-pixel pad + random crop
        and horizontal flip."""
        from monai import transforms as T

        steps = [_ToFloat(), self.normalize_transform()]
        if train:
            steps += [T.BorderPadd("image", spatial_border=4), T.RandSpatialCropd("image", roi_size=(32, 32)),
                      T.RandFlipd("image", prob=0.5, spatial_axis=1)]
        steps.append(T.EnsureTyped("image", track_meta=False))
        return T.Compose(steps)

    def loss(self):
        from torch import nn

        return nn.CrossEntropyLoss()

    def model(self, name: str | None = None, **overrides):
        from leanseg.models import create

        cfg = self.config
        kwargs = (dict(cfg.model_kwargs) if name in (None, cfg.model) else {}) | overrides
        kwargs = {"num_classes": len(cfg.labels), "spatial_dims": 2, "in_channels": 3} | kwargs
        return create(name or cfg.model, **kwargs)

    def batch_score(self, logits, target) -> dict[str, float]:
        return {"acc": float((logits.argmax(1) == target).float().mean())}

    def evaluate(self, model, loader, device) -> dict[str, float]:
        import torch

        correct = total = 0
        with torch.no_grad():
            for batch in loader:
                pred = model(batch["image"].to(device)).argmax(1).cpu()
                correct += int((pred == batch["label"]).sum())
                total += len(pred)
        return {"accuracy": correct / max(1, total)}
