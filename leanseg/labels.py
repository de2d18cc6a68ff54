"""The one mapping between label values, regions and a network's output channels (``LabelManager``).

Training targets, validation, ``leanseg.predict`` and ``leanseg evaluate`` all go through it, so a region means the
same voxels everywhere. A task is either

- **classes** (``labels`` {name: value} in output order): one softmax over the outputs; a voxel's label is the
  value of its most probable class. Training targets are class indices.
- **regions** (``regions`` {name: [values]} in output order, largest first, e.g. BraTS WT/TC/ET): one sigmoid per
  output, thresholded at 0.5; each region paints the label values it does not share with a later (inner) region,
  so nested regions come back as labels (WT - TC -> edema, TC - ET -> necrosis, ET -> enhancing). Training
  targets are one binary mask per region.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from leanseg.errors import LeanSegError

if TYPE_CHECKING:
    import torch


def _int_value(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= int(value) <= 32767:
        raise LeanSegError(f"{what}: label values must be integers in 0..32767, got {value!r}")
    return int(value)


def check_label_values(label_map: np.ndarray, allowed: set[int] | frozenset[int], where, whose: str) -> None:
    """A one-line error naming ``where`` when ``label_map`` holds non-integers or values outside ``allowed``."""
    values = np.unique(label_map)
    if not np.all(values == np.round(values)):
        raise LeanSegError(f"{where}: label map has non-integer values")
    bad = sorted(set(values.astype(np.int64).tolist()) - set(allowed))
    if bad:
        raise LeanSegError(f"{where}: label values {bad[:10]} are not in {whose} set {sorted(allowed)}")


@dataclass(frozen=True)
class LabelManager:
    """Classes (softmax) or regions (sigmoid) of a task, and every conversion between them and label maps."""

    labels: dict[str, int] = field(default_factory=dict)  # class name -> label value, in output order
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)  # region name -> label values, output order

    def __post_init__(self):
        if bool(self.labels) == bool(self.regions):
            raise LeanSegError("give either labels {name: value} or regions {name: [values]}, not both or neither")
        if not isinstance(self.labels, Mapping) or not isinstance(self.regions, Mapping):
            raise LeanSegError("labels and regions must be JSON objects {name: ...}")
        labels = {str(k): _int_value(v, f"labels[{k!r}]") for k, v in self.labels.items()}
        if len(set(labels.values())) != len(labels):
            raise LeanSegError(f"labels {labels}: two classes share a label value")
        regions = {}
        for name, values in self.regions.items():
            if isinstance(values, int | np.integer):
                values = [values]
            if not isinstance(values, Sequence) or isinstance(values, str) or not values:
                raise LeanSegError(f"regions[{name!r}]: expected a non-empty list of label values, got {values!r}")
            regions[str(name)] = tuple(sorted({_int_value(v, f"regions[{name!r}]") for v in values}))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "regions", regions)

    @classmethod
    def from_config(cls, labels: Mapping | None = None, regions: Mapping | None = None,
                    num_outputs: int | None = None) -> LabelManager:
        """From checkpoint/task fields; with neither, ``num_outputs`` classes whose values are their indices."""
        if not labels and not regions:
            if not num_outputs:
                raise LeanSegError("no labels or regions given and the number of outputs is unknown")
            labels = {f"label_{i}": i for i in range(num_outputs)}
        manager = cls(labels=dict(labels or {}), regions=dict(regions or {}))
        if num_outputs is not None and manager.num_outputs != num_outputs:
            raise LeanSegError(f"{manager.num_outputs} {manager.kind} named but the model has {num_outputs} outputs")
        return manager

    # ------------------------------------------------------------------------------------------------ description
    @property
    def sigmoid(self) -> bool:
        return bool(self.regions)

    @property
    def kind(self) -> str:
        return "regions" if self.sigmoid else "classes"

    @property
    def activation(self) -> str:
        """The output activation: "sigmoid" for regions, "softmax" for classes."""
        return "sigmoid" if self.sigmoid else "softmax"

    @property
    def names(self) -> list[str]:
        """Output channel names, in order."""
        return list(self.regions or self.labels)

    @property
    def num_outputs(self) -> int:
        return len(self.names)

    @property
    def values(self) -> set[int]:
        """Every label value a reference map of this task may hold (0, background, included)."""
        found = set(self.labels.values()) if self.labels else {v for r in self.regions.values() for v in r}
        return found | {0}

    @property
    def paint(self) -> list[int]:
        """Regions only: the label value each region writes (ET 4, TC 1, WT 2 for BraTS)."""
        regions = list(self.regions.values())
        return [min(set(r) - {v for later in regions[i + 1:] for v in later}, default=max(r))
                for i, r in enumerate(regions)]

    @property
    def dtype(self) -> np.dtype:
        """dtype of the label maps this manager writes."""
        from leanseg.io.nifti import label_dtype

        return label_dtype(max(self.paint if self.sigmoid else self.labels.values()))

    @property
    def scored(self) -> dict[str, tuple[int, ...]]:
        """What Dice is reported for: every region, or every class but one named "background"."""
        if self.sigmoid:
            return dict(self.regions)
        return {name: (value,) for name, value in self.labels.items() if name.lower() != "background"}

    def to_json(self) -> dict:
        return {"regions": {k: list(v) for k, v in self.regions.items()}} if self.sigmoid else {"labels": self.labels}

    # -------------------------------------------------------------------------------------------- label maps in
    def check(self, label_map: np.ndarray, where) -> None:
        """A one-line error naming ``where`` when ``label_map`` holds non-integers or values outside the task."""
        check_label_values(label_map, self.values, where, "this task's")

    def masks(self, label_map: np.ndarray) -> np.ndarray:
        """``(*spatial)`` label values -> ``(K, *spatial)`` bool, one mask per output channel."""
        groups = self.regions.values() if self.sigmoid else ((v,) for v in self.labels.values())
        return np.stack([np.isin(label_map, list(g)) for g in groups])

    def encode(self, label_map: np.ndarray, where="label map") -> np.ndarray:
        """Label values -> training target: ``(K, *spatial)`` uint8 region masks, or ``(1, *spatial)`` int64
        class indices."""
        self.check(label_map, where)
        if self.sigmoid:
            return self.masks(label_map).astype(np.uint8)
        index = np.zeros(label_map.shape, np.int64)
        for i, value in enumerate(self.labels.values()):
            index[label_map == value] = i
        return index[None]

    # ------------------------------------------------------------------------------------------- network out
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N, K, ...)`` logits -> probabilities (sigmoid or softmax over K), as sliding-window inference does."""
        from leanseg.inference import ACTIVATIONS

        return ACTIVATIONS[self.activation](logits)

    def predicted_masks(self, probs: torch.Tensor) -> torch.Tensor:
        """``(N, K, ...)`` probabilities (or logits' activation) -> ``(N, K, ...)`` {0, 1} float masks."""
        import torch

        if self.sigmoid:
            return (probs > 0.5).float()
        return torch.nn.functional.one_hot(probs.argmax(1), probs.shape[1]).movedim(-1, 1).float()

    def target_masks(self, target: torch.Tensor) -> torch.Tensor:
        """An encoded training target ``(N, K or 1, ...)`` -> ``(N, K, ...)`` {0, 1} float masks."""
        import torch

        if self.sigmoid:
            return target.float()
        return torch.nn.functional.one_hot(target[:, 0].long(), self.num_outputs).movedim(-1, 1).float()

    @property
    def background(self) -> list[float]:
        """The probabilities of a voxel that holds nothing (outside a crop): no region, or the class of value 0."""
        if self.sigmoid:
            return [0.0] * self.num_outputs
        values = list(self.labels.values())
        fill = [0.0] * self.num_outputs
        fill[values.index(0) if 0 in values else 0] = 1.0
        return fill

    def decode(self, probs: torch.Tensor) -> np.ndarray:
        """``(K, *spatial)`` probabilities -> ``(*spatial)`` label values, as ``leanseg predict`` writes them."""
        if self.sigmoid:
            out = np.zeros(probs.shape[1:], dtype=self.dtype)
            for channel, value in enumerate(self.paint):
                out[(probs[channel] > 0.5).numpy()] = value
            return out
        from leanseg.inference import argmax_channels

        lut = np.asarray(list(self.labels.values()), dtype=self.dtype)
        index = argmax_channels(probs)
        if np.array_equal(lut, np.arange(len(lut))):  # values 0..K-1 are the channel indices: no lookup pass
            return index.astype(self.dtype, copy=False)
        return lut[index]


__all__ = ["LabelManager", "check_label_values"]
