"""The task interface (``Task``, ``TaskConfig``) and the registry of tasks.

A task says what to learn: where its cases are and how to read them, its labels or regions, transforms, loss
and defaults. ``leanseg.training.train`` runs any task through this interface, and validates with the same
sliding-window inference and label handling as ``leanseg.predict`` (``Task.evaluate``).

Tasks are plugins: a package lists them under the ``leanseg.tasks`` entry-point group as a torch-free table
``{name: ("module:Class", "one-line description")}``; leanseg's own live in ``pipelines/`` (see
``pyproject.toml``). leanseg itself imports no task module, so the dependency runs one way (pipelines -> leanseg)
and ``leanseg --help`` lists the tasks without importing torch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from leanseg.errors import LeanSegError
from leanseg.labels import LabelManager
from leanseg.options import look_up_option

if TYPE_CHECKING:
    import torch
    from torch import nn

ENTRY_POINT_GROUP = "leanseg.tasks"


@dataclass
class TaskConfig:
    """Defaults every task has; a task subclasses it and overrides the values with its own reasons."""

    spatial_dims: int = 3
    channels: tuple[str, ...] = ()  # input channel names, in the order the model sees them
    # classes {name: label value} (one softmax) or regions {name: (values)} (one sigmoid each): exactly one is set
    labels: dict = field(default_factory=dict)
    regions: dict = field(default_factory=dict)
    window: tuple[int, ...] = (64, 64, 64)
    batch_size: int = 2
    samples_per_case: int = 2  # patches drawn per case load: amortises loading and normalising a volume
    epochs: int = 50
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine" or "poly" (nnU-Net's (1 - t)^0.9)
    # "adamw", or "sgd": Nesterov momentum 0.99, nnU-Net's optimiser (with its lr 1e-2 and poly schedule)
    optimizer: str = "adamw"
    model: str = "lean_unet"
    model_kwargs: dict = field(default_factory=dict)
    synthetic_size: int = 64  # edge of a synthetic volume or image
    val_fraction: float = 0.2  # of the cases, held out for validation (at least one)
    val_batch_size: int = 1  # whole cases of different sizes: one at a time
    hd95: bool = True  # report HD95 at validation (scipy distance transforms: cheap next to the forward)
    normalization: Any = "none"  # as leanseg.checkpoint.Normalization.parse reads it; the same in predict
    # voxel size (mm) cases are resampled to on loading and that the checkpoint records for predict: a tuple, or
    # "median", the median over the cases' headers (nnU-Net's target). None: no resampling (images, synthetic data)
    spacing: Any = None


class Task:
    """A task: subclass it, set ``name`` and ``Config``, and implement the four methods that raise
    NotImplementedError below. Everything else has a default that fits segmentation tasks."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    workdir: Path | None = None  # the run's folder, where configure() may cache what it derives (set by train)
    progress: bool = True  # whether configure() may show a progress bar

    def __init__(self, config: TaskConfig | None = None, **options):
        if config is not None and options:
            raise LeanSegError("give a task config or options, not both")
        if config is None:
            known = {f.name for f in dataclasses.fields(self.Config)}
            for option in sorted(set(options) - known):
                look_up_option(option, sorted(known), what=f"option of task {self.name!r}")
            values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items()}
            config = self.Config(**values)
        self.config = config

    # --------------------------------------------------------------------------------------- each task's own
    def discover(self, root: str | Path) -> list[dict]:
        """Cases under ``root`` as dicts (``id``, ``image``, ``label``, ...); one-line errors list what is missing."""
        raise NotImplementedError

    def synthetic(self, n: int, seed: int) -> list[dict]:
        """``n`` generated cases, a function of ``seed`` only."""
        raise NotImplementedError

    def transforms(self, train: bool):
        """A callable (MONAI Compose) taking a case dict to {"image": (C, ...), "label": the encoded target}."""
        raise NotImplementedError

    def loss(self) -> nn.Module:
        raise NotImplementedError

    # --------------------------------------------------------------------------------------------- defaults
    def configure(self, cases: list[dict]) -> None:
        """Settle what only the data can tell (seg2d's mask values, CIFAR-100's class count); default: nothing."""

    def case_spacing(self, case: dict) -> tuple[float, ...] | None:
        """The voxel size of a case (its first image file's header, canonical axis order); None when it has no
        file (synthetic arrays) or the file is not NIfTI."""
        from leanseg.io import NIFTI_SUFFIXES

        image = case.get("image")
        first = image[0] if isinstance(image, list | tuple) and image else image
        if not isinstance(first, str | Path) or not str(first).lower().endswith(NIFTI_SUFFIXES):
            return None
        from leanseg.io.nifti import nifti_geometry

        return nifti_geometry(first).spacing  # the header only, checked: no voxel is read

    def resolve_spacing(self, cases: list[dict]) -> tuple[float, ...] | None:
        """Settle ``config.spacing`` to a tuple (or None) from the cases: "median" takes the median voxel size of
        those that have one; a tuple stays. Cases without files (synthetic) are at their own spacing: None."""
        from leanseg.spacing import parse_spacing

        wanted = self.config.spacing
        if wanted is None or not cases or self.case_spacing(cases[0]) is None:
            spacing = None
        elif isinstance(wanted, str) and wanted.strip().lower() == "median":
            sizes = [s for s in (self.case_spacing(c) for c in cases) if s is not None]
            spacing = tuple(float(v) for v in np.median(np.array(sizes), axis=0)) if sizes else None
        else:
            spacing = parse_spacing(wanted, self.config.spatial_dims, what="task option spacing")
        self.config = dataclasses.replace(self.config, spacing=spacing)
        return spacing

    def plan_report(self, out: Path) -> str | None:
        """A table of what the task settled from the data (a plan), written beside the checkpoints in ``out`` and
        printed before training; default: none."""
        return None

    def cache_cases(self, cases: list[dict]) -> bool:
        """Whether training keeps the preprocessed cases in memory; default: when there are at most 64."""
        return len(cases) <= 64

    def synthetic_window(self) -> tuple[int, ...]:
        """Synthetic volumes are small: a window no larger than the volume, a multiple of 16 for 4 network levels."""
        return tuple(min(w, max(16, self.config.synthetic_size // 16 * 16)) for w in self.config.window)

    @property
    def label_manager(self) -> LabelManager:
        return LabelManager(labels=dict(self.config.labels), regions=dict(self.config.regions))

    def model(self, name: str | None = None, **overrides) -> nn.Module:
        """The task's default model (or ``name``) for its channels and outputs, from the leanseg model registry."""
        from leanseg.models import create

        cfg = self.config
        # the task's model_kwargs belong to its default model; another model gets its own defaults
        kwargs = (dict(cfg.model_kwargs) if name in (None, cfg.model) else {}) | overrides
        kwargs = {"spatial_dims": cfg.spatial_dims, "in_channels": len(cfg.channels),
                  "out_channels": self.label_manager.num_outputs} | kwargs
        return create(name or cfg.model, **kwargs)

    def checkpoint_fields(self) -> dict:
        """What ``leanseg predict`` needs besides the model: channels, labels or regions, normalisation, window."""
        spacing = self.config.spacing
        window = self.config.window  # None until a planning task has planned it
        return {"task": self.name, "channels": list(self.config.channels), **self.label_manager.to_json(),
                "normalization": self.config.normalization, **({"window": list(window)} if window else {}),
                **({"spacing": list(spacing)} if isinstance(spacing, tuple) else {})}

    def normalize_transform(self, keys: str = "image"):
        """The task's intensity normalisation as a MONAI dict transform: the one predict applies."""
        from leanseg.checkpoint import Normalization

        return Normalization.parse(self.config.normalization).transform(keys=keys)

    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        """Mean over whole validation cases of Dice (and HD95) per output, predicted exactly as ``leanseg predict``
        predicts: the same sliding window, blending of probabilities and label manager. HD95 is NaN-safe (it is
        undefined where a region is absent from the prediction or the reference)."""
        rows = [self.validate_case(model, batch["image"], batch["label"], device) for batch in loader]
        if not rows:
            return {}
        return {k: float(np.nanmean([r[k] for r in rows])) if any(np.isfinite(r[k]) for r in rows)
                else float("nan") for k in rows[0]}

    def validate_case(self, model: nn.Module, image: torch.Tensor, target: torch.Tensor,
                      device: torch.device) -> dict[str, float]:
        """Scores of one case ``(1, C, ...)``, predicted and decoded into a label map exactly as ``leanseg predict``
        writes it (the same sliding window, blending and label manager)."""
        from leanseg.inference import sliding_window_predict

        manager = self.label_manager
        probs = sliding_window_predict(model, image, self.config.window, activation=manager.activation,
                                       device=device)
        return self.score_case(manager.decode(probs[0]), target)

    def score_case(self, label_map: np.ndarray, target: torch.Tensor) -> dict[str, float]:
        """Dice (and HD95) of a predicted label map against an encoded target ``(1, K or 1, ...)``, on the masks
        ``leanseg evaluate`` scores."""
        import torch

        from leanseg.metrics import dice_hd95

        manager = self.label_manager
        scored = LabelManager(regions=manager.scored)
        pred = torch.from_numpy(scored.masks(label_map))[None].float()
        keep = [i for i, name in enumerate(manager.names) if name in manager.scored]
        ref = manager.target_masks(target.cpu())[:, keep]
        dice, hd = dice_hd95(pred, ref, hd95=self.config.hd95)
        out = {f"dice_{name}": float(d) for name, d in zip(scored.names, dice, strict=True)}
        if hd is not None:
            out |= {f"hd95_{name}": float(h) for name, h in zip(scored.names, hd, strict=True)}
        return out

    def batch_score(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """What the progress bar shows next to the loss: the mean Dice of the batch (1 where both are empty)."""
        manager = self.label_manager
        pred = manager.predicted_masks(manager.probabilities(logits.detach()))
        ref = manager.target_masks(target)
        dims = [0] + list(range(2, pred.ndim))
        inter, total = (pred * ref).sum(dims), pred.sum(dims) + ref.sum(dims)
        dice = (2 * inter / total.clamp_min(1)).where(total > 0, total.new_ones(()))
        return {"dice": float(dice.mean())}


# ------------------------------------------------------------------------------------------------- registry
@functools.cache
def _table() -> dict[str, tuple[str, str]]:
    """name -> ("module:Class", description), from every package's ``leanseg.tasks`` entry points."""
    table: dict[str, tuple[str, str]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        provided = ep.load()
        if not isinstance(provided, dict):
            raise LeanSegError(f"entry point {ep.name} = {ep.value}: expected a dict of tasks")
        table.update(provided)
    return table


def available() -> list[str]:
    """Task names, sorted."""
    return sorted(_table())


def describe() -> dict[str, str]:
    """Task name -> one-line description, without importing any task module."""
    return {name: desc for name, (_, desc) in sorted(_table().items())}


def task_class(name: str) -> type[Task]:
    """The Task subclass registered as ``name``; an unknown name gets a 'did you mean' error."""
    table = _table()
    if not table:
        raise LeanSegError("no tasks are registered: install leanseg (pip install -e .) so its entry points exist")
    entry = look_up_option(name, table, what="task")
    module, _, attr = entry[0].partition(":")
    cls = getattr(import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise LeanSegError(f"task {name!r}: {entry[0]} is not a leanseg.tasks.Task subclass")
    return cls


def prepared_task(name: str, data: str | os.PathLike, workdir: str | os.PathLike | None = None, progress: bool = True,
                  **options) -> tuple[Task, list[dict]]:
    """Task ``name`` with its cases under ``data`` discovered and everything the data settles configured (plans,
    spacing), as training does before it splits; ``workdir``: where a task finds what training cached there."""
    task = get_task(name, None, **options)
    cases = task.discover(Path(data))
    task.workdir = Path(workdir) if workdir is not None else None
    task.progress = progress
    task.configure(cases)
    task.resolve_spacing(cases)
    return task, cases


def get_task(name: str, config: TaskConfig | None = None, **options) -> Task:
    """An instance of task ``name`` with its defaults, ``config`` or ``options`` (fields of its Config)."""
    return task_class(name)(config, **options)


__all__ = ["ENTRY_POINT_GROUP", "Task", "TaskConfig", "available", "describe", "get_task", "prepared_task",
           "task_class"]
