"""Any dataset folder with a ``dataset.json``: the Medical Segmentation Decathlon form and nnU-Net v2's.

``leanseg train -d Task04_Hippocampus/`` needs nothing else. The task reads ``dataset.json`` (channels, labels or
regions, cases), takes a fingerprint of the training cases (spacings, shapes, intensities; every case is checked
on the way: files present, image and label on one grid, label values in the dataset's set) and derives a plan
from it, as nnU-Net does: target spacing, patch, network depth and widths, batch size, normalisation. The plan is
printed before training and written as ``plan.json``; ``--plan`` reads one back, and every field it holds, or any
training flag, overrides the derived value.

Forms recognised (``dataset.json`` at the folder's top):

- **MSD** (and nnU-Net v1): ``modality`` {"0": "MRI"}, ``labels`` {"0": "background", "1": "Anterior"},
  ``training`` [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}]; one image file per case,
  4D (channels last) when there are several channels.
- **nnU-Net v2**: ``channel_names`` {"0": "T1"}, ``labels`` {"background": 0, "anterior": 1} (or regions,
  {"whole": [1, 2, 3], ...}), ``file_ending`` ".nii.gz"; ``imagesTr/CASE_0000.nii.gz`` per channel and
  ``labelsTr/CASE.nii.gz``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.errors import LeanSegError
from leanseg.tasks import Task, TaskConfig
from pipelines._common import missing_error, seeded_cases

# nnU-Net's CT scheme applies to channels named so (case-insensitive); every other modality is z-scored per case
CT_NAMES = {"ct", "cect", "ncct", "ctce"}


# --------------------------------------------------------------------------------------------------- dataset.json
@dataclass
class DatasetSpec:
    """What a dataset.json says: its form, channels, classes or regions, and the training cases' files."""

    root: Path
    form: str  # "msd" or "nnunetv2"
    name: str
    channels: tuple[str, ...]
    labels: dict[str, int]  # classes {name: value} (softmax), background first; or
    regions: dict[str, tuple[int, ...]]  # regions {name: values} (sigmoid)
    cases: list[dict]  # {"id", "image": [paths], "label": path}

    @property
    def ct(self) -> bool:
        return all(c.strip().lower() in CT_NAMES for c in self.channels)


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise LeanSegError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise LeanSegError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise LeanSegError(f"{path}: expected a JSON object")
    return data


def _int_keyed(table: Any, where: str, example: str) -> list[tuple[int, str]]:
    """{"0": "T1", "1": "T2"} -> [(0, "T1"), (1, "T2")], sorted; one-line errors naming ``where``."""
    if not isinstance(table, dict) or not table:
        raise LeanSegError(f"{where}: expected an object {example}")
    try:
        return sorted((int(k), str(v)) for k, v in table.items())
    except ValueError:
        raise LeanSegError(f"{where}: keys must be integers (\"0\", \"1\", ...)") from None


def _indexed_names(table: Any, where: str) -> tuple[str, ...]:
    """{"0": "T1", "1": "T2"} -> ("T1", "T2"); keys must be 0..N-1."""
    order = _int_keyed(table, where, '{"0": name, ...}')
    if [k for k, _ in order] != list(range(len(order))):
        raise LeanSegError(f"{where}: channel numbers must run 0..{len(order) - 1}, got {[k for k, _ in order]}")
    return tuple(v for _, v in order)


def _msd_labels(table: Any, where: str) -> dict[str, int]:
    """MSD: {"0": "background", "1": "Anterior"} -> {"background": 0, "Anterior": 1}, in value order."""
    pairs = _int_keyed(table, where, '{"0": "background", "1": name, ...}')
    if pairs[0][0] != 0:
        raise LeanSegError(f"{where}: label value 0 (background) is missing")
    names = [n for _, n in pairs]
    if len(set(names)) != len(names):
        raise LeanSegError(f"{where}: two label values share a name")
    return {name: value for value, name in pairs}


def _v2_labels(table: Any, where: str) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """nnU-Net v2: {"background": 0, "a": 1} -> classes; any list value -> regions (background dropped)."""
    if not isinstance(table, dict) or not table:
        raise LeanSegError(f"{where}: expected an object {{\"background\": 0, name: value, ...}}")
    if any(isinstance(v, list | tuple) for v in table.values()):
        regions = {}
        for name, values in table.items():
            values = values if isinstance(values, list | tuple) else [values]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise LeanSegError(f"{where}: region {name!r} must list integer label values, got {values!r}")
            if set(values) != {0}:
                regions[str(name)] = tuple(int(v) for v in values)
        return {}, regions
    labels = {}
    for name, value in table.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise LeanSegError(f"{where}: label {name!r} must be an integer value, got {value!r}")
        labels[str(name)] = value
    if 0 not in labels.values():
        raise LeanSegError(f"{where}: label value 0 (background) is missing")
    return dict(sorted(labels.items(), key=lambda kv: kv[1])), {}


def _visible(paths) -> list[Path]:
    """Skip the macOS '._' resource files that MSD tarballs carry next to every image."""
    return sorted(p for p in paths if not p.name.startswith("._") and not p.name.startswith("."))


def read_dataset(root: str | Path) -> DatasetSpec:
    """The dataset.json under ``root`` and its training cases; one-line errors name the file or case at fault."""
    root = Path(root)
    meta = root / "dataset.json"
    if not root.is_dir():
        raise LeanSegError(f"{root}: not a folder")
    if not meta.is_file():
        raise LeanSegError(f"{root}: no dataset.json (an MSD or nnU-Net v2 dataset folder has one); give --task "
                           "for the other layouts")
    data = _load_json(meta)
    name = str(data.get("name") or root.name)
    if "channel_names" in data:  # nnU-Net v2
        channels = _indexed_names(data["channel_names"], f"{meta}: channel_names")
        labels, regions = _v2_labels(data.get("labels"), f"{meta}: labels")
        ending = data.get("file_ending", ".nii.gz")
        if not isinstance(ending, str) or ending.lower() not in (".nii.gz", ".nii"):
            raise LeanSegError(f"{meta}: file_ending {ending!r} is not read here; convert the images to .nii.gz")
        cases = _v2_cases(root, len(channels), ending)
        form = "nnunetv2"
    elif "modality" in data:  # MSD / nnU-Net v1
        channels = _indexed_names(data["modality"], f"{meta}: modality")
        labels, regions = _msd_labels(data.get("labels"), f"{meta}: labels"), {}
        cases = _msd_cases(root, data.get("training"), meta)
        form = "msd"
    else:
        raise LeanSegError(f"{meta}: neither MSD ('modality', 'labels', 'training') nor nnU-Net v2 "
                           "('channel_names', 'labels', 'file_ending') form")
    if not cases:
        raise LeanSegError(f"{root}: dataset.json lists no training cases and imagesTr/ holds none")
    return DatasetSpec(root, form, name, channels, labels, regions, cases)


def _msd_cases(root: Path, training: Any, meta: Path) -> list[dict]:
    if training is None:  # not listed: every image in imagesTr
        pairs = [(p, root / "labelsTr" / p.name) for p in _visible((root / "imagesTr").glob("*.nii*"))]
    else:
        if not isinstance(training, list) or not all(isinstance(t, dict) and isinstance(t.get("image"), str)
                                                     and isinstance(t.get("label"), str) for t in training):
            raise LeanSegError(f"{meta}: 'training' must list {{\"image\": path, \"label\": path}} objects")
        pairs = [(root / t["image"], root / t["label"]) for t in training]
    missing = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
               for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise missing_error("files listed in dataset.json are", root, missing)
    return [{"id": _case_id(image.name), "image": [str(image)], "label": str(label)} for image, label in pairs]


def _case_id(filename: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if filename.lower().endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def _v2_cases(root: Path, n_channels: int, ending: str) -> list[dict]:
    files = _visible((root / "imagesTr").glob(f"*{ending}"))
    groups: dict[str, dict[int, Path]] = {}
    for path in files:
        base = path.name[: -len(ending)]
        case, _, index = base.rpartition("_")
        if not case or len(index) != 4 or not index.isdigit():
            raise LeanSegError(f"{path}: nnU-Net v2 images are named CASE_XXXX{ending} (XXXX the channel number)")
        groups.setdefault(case, {})[int(index)] = path
    cases, missing = [], []
    for case, channels in sorted(groups.items()):
        absent = [f"imagesTr/{case}_{i:04d}{ending}" for i in range(n_channels) if i not in channels]
        extra = sorted(set(channels) - set(range(n_channels)))
        if extra:
            raise LeanSegError(f"{root / 'imagesTr'}: case {case} has channel {extra[0]:04d} but dataset.json "
                               f"names {n_channels} channel(s)")
        label = root / "labelsTr" / f"{case}{ending}"
        if not label.is_file():
            absent.append(f"labelsTr/{case}{ending}")
        missing += absent
        if not absent:
            cases.append({"id": case, "image": [str(channels[i]) for i in range(n_channels)], "label": str(label)})
    if missing:
        raise missing_error("files", root, missing)
    return cases


# ---------------------------------------------------------------------------------------------------- reading
def load_case(case: dict, n_channels: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """``(image (C, X, Y, Z) float32, label (X, Y, Z), spacing)`` of a file case, RAS order; one-line errors
    name the case when the image's channels or the label's grid do not fit."""
    from leanseg.io import read_nifti

    if isinstance(case["image"], np.ndarray):  # synthetic: arrays at 1 mm
        return case["image"], case["label"], (1.0,) * (case["image"].ndim - 1)
    image, geometry = read_nifti(case["image"])
    if image.shape[0] != n_channels:
        raise LeanSegError(f"case {case['id']}: {image.shape[0]} channel(s) in {Path(case['image'][0]).name}, "
                           f"dataset.json names {n_channels}")
    label, label_geometry = read_nifti(case["label"])
    if label.shape[0] != 1:
        raise LeanSegError(f"case {case['id']}: the label map {case['label']} has {label.shape[0]} volumes, not 1")
    if label_geometry.shape != geometry.shape:
        raise LeanSegError(f"case {case['id']}: label grid {label_geometry.shape} differs from the image's "
                           f"{geometry.shape}")
    if not np.allclose(label_geometry.affine, geometry.affine, atol=1e-3):
        raise LeanSegError(f"case {case['id']}: the label's affine differs from the image's (not on one grid)")
    return image, label[0], geometry.spacing


# ------------------------------------------------------------------------------------------------ fingerprint
def fingerprint(spec: DatasetSpec, cases: list[dict], progress: bool = True) -> dict:
    """nnU-Net's dataset fingerprint: per case its spacing, shape and the fraction of the grid inside the box of
    non-zero voxels; per channel the foreground intensities' mean, std and 0.5/99.5 percentiles (from up to 10,000
    foreground voxels a case). Reads every case, checking its files, grid and label values on the way."""
    from tqdm.auto import tqdm

    from leanseg.labels import LabelManager

    manager = LabelManager(labels=dict(spec.labels), regions=dict(spec.regions))
    rng = np.random.default_rng(1234)
    spacings, shapes, box_fraction = [], [], []
    samples: list[list[np.ndarray]] = [[] for _ in spec.channels]
    label_counts: dict[int, int] = {}
    quiet = not progress or not sys.stderr.isatty()  # a log file gets no bar
    for case in tqdm(cases, desc="fingerprint", disable=quiet, leave=False, dynamic_ncols=True):
        image, label, spacing = load_case(case, len(spec.channels))
        manager.check(label, f"case {case['id']} ({case.get('label', 'label')})")
        spacings.append(spacing)
        shapes.append(image.shape[1:])
        nonzero = np.any(image != 0, axis=0)
        if nonzero.any():
            idx = np.nonzero(nonzero)
            box = math.prod(int(i.max() - i.min() + 1) for i in idx)
            box_fraction.append(box / nonzero.size)
        else:
            box_fraction.append(1.0)
        fg = label > 0
        for c in range(len(spec.channels)):
            values = image[c][fg] if fg.any() else image[c].ravel()
            if values.size > 10_000:
                values = rng.choice(values, 10_000, replace=False)
            samples[c].append(values.astype(np.float32))
        values, counts = np.unique(label.astype(np.int64), return_counts=True)
        for v, n in zip(values.tolist(), counts.tolist(), strict=True):
            label_counts[v] = label_counts.get(v, 0) + n
    intensities = []
    for c, name in enumerate(spec.channels):
        values = np.concatenate(samples[c]) if samples[c] else np.zeros(1, np.float32)
        low, high = np.percentile(values, [0.5, 99.5])
        clipped = np.clip(values, low, high)
        intensities.append({"channel": name, "mean": float(clipped.mean()), "std": float(clipped.std()) or 1.0,
                            "p00_5": float(low), "p99_5": float(high)})
    return {"dataset": spec.name, "form": spec.form, "cases": [c["id"] for c in cases],
            "spacings": [list(s) for s in spacings], "shapes": [list(map(int, s)) for s in shapes],
            "nonzero_box_fraction": box_fraction, "intensities": intensities,
            "label_voxels": {str(k): v for k, v in sorted(label_counts.items())}}


# -------------------------------------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """How to train on a dataset: every field can be overridden from a plan.json or a training flag."""

    spacing: tuple[float, ...]  # target voxel size (mm, RAS axes)
    median_shape: tuple[int, ...]  # of the cases at that spacing (informational)
    window: tuple[int, ...]  # training patch and sliding window
    batch_size: int
    model: str
    model_kwargs: dict
    normalization: dict
    epochs: int
    lr: float
    samples_per_case: int
    weights: int = 0  # of the planned model (informational)
    # "default": small rotations/scalings, mirroring, intensity scale/shift; "strong": nnU-Net's fuller set (wider
    # rotations and scalings, noise, blur, contrast, gamma, simulated low resolution)
    augmentation: str = "default"
    optimizer: str = "adamw"  # or "sgd" (Nesterov momentum 0.99, nnU-Net's)

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_json(cls, data: Any, where: str) -> dict:
        """The fields a plan.json sets (any subset), checked by name; values are checked where they are used."""
        if not isinstance(data, dict):
            raise LeanSegError(f"{where}: a plan is a JSON object of fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            from leanseg.options import look_up_option

            look_up_option(unknown[0], sorted(known), what=f"plan field in {where}")
        kinds = {"model_kwargs": dict, "normalization": dict | str, "model": str, "batch_size": int, "epochs": int,
                 "samples_per_case": int, "weights": int, "lr": int | float, "augmentation": str, "optimizer": str,
                 "spacing": list | str, "median_shape": list, "window": list}
        for k, v in data.items():
            if not isinstance(v, kinds[k]) or isinstance(v, bool):
                raise LeanSegError(f"{where}: plan field {k!r} has the wrong type ({type(v).__name__}: {v!r})")
        if "augmentation" in data:
            from leanseg.options import look_up_option

            look_up_option(data["augmentation"], AUGMENTATIONS, what=f"augmentation in {where}")
        return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


# The lean design for dataset tasks (3D): plain lean levels, max-pool down, deep supervision as nnU-Net trains;
# widths 16, doubling per level, capped at 320: half nnU-Net's (why: docs/benchmarks.md, MSD hippocampus).
LEAN_DESIGN: dict[str, Any] = {"down": "maxpool", "deep_supervision": True}
BASE_WIDTH = 16
# Epochs: as many as make this many steps on the training part of a 5-fold split, between 10 and 1000 (nnU-Net
# takes 250,000 steps on a GPU; this is a CPU's budget).
TARGET_STEPS = 2760
PATCH_BUDGET = 128**3  # voxels of one patch: what a CPU step can afford (nnU-Net's GPU budget is similar)
MIN_EDGE = 4  # the coarsest feature map keeps at least this many voxels per axis (nnU-Net's rule)
MAX_LEVELS = 6


def target_spacing(spacings: np.ndarray) -> tuple[float, ...]:
    """The median voxel size; for strongly anisotropic data (one axis over 3x the others) the low-resolution axis
    takes the 10th percentile instead, as nnU-Net does, so thick-slice cases are not blurred further."""
    target = np.median(spacings, axis=0)
    worst = int(np.argmax(target))
    others = np.delete(target, worst)
    if others.size and target[worst] > 3 * others.max():
        target[worst] = np.percentile(spacings[:, worst], 10)
    return tuple(float(round(v, 5)) for v in target)


def plan_from(fp: dict, spec: DatasetSpec, memory_bytes: int | None = None) -> Plan:
    """nnU-Net's planning rules, on a CPU budget: patch = the median case (rounded up to the network's stride)
    within PATCH_BUDGET voxels; levels until an axis would fall below MIN_EDGE; widths BASE_WIDTH, doubling, capped
    at 320; batch = 5% of the dataset's voxels per batch (at least 2), capped by a quarter of the memory; epochs
    for TARGET_STEPS steps."""
    spacings = np.asarray(fp["spacings"], dtype=np.float64)
    shapes = np.asarray(fp["shapes"], dtype=np.float64)
    spacing = target_spacing(spacings)
    resampled = shapes * spacings / np.asarray(spacing)
    median = np.median(resampled, axis=0)
    patch = np.maximum(median, 8.0)
    if math.prod(patch) > PATCH_BUDGET:  # shrink keeping the aspect
        patch = patch * (PATCH_BUDGET / math.prod(patch)) ** (1 / len(patch))
    levels = 1
    while levels < MAX_LEVELS and min(patch) / 2**levels >= MIN_EDGE:
        levels += 1
    stride = 2 ** (levels - 1)
    window = tuple(int(math.ceil(p / stride) * stride) for p in patch)
    features = tuple(min(BASE_WIDTH * 2**i, 320) for i in range(levels))
    total_voxels = float(np.sum(np.prod(resampled, axis=1)))
    voxels = math.prod(window)
    batch = max(2, int(0.05 * total_voxels // voxels))
    memory = memory_bytes if memory_bytes is not None else _memory()
    # training memory per patch voxel: about 12 float32 activations of each level's width, kept for the backward
    per_voxel = 4 * 12 * sum(f / 8**i for i, f in enumerate(features))
    batch = max(1, min(batch, int(0.25 * memory // (per_voxel * voxels)), 64))
    if spec.ct:
        stats = fp["intensities"]
        norm: dict = {"kind": "ct", "mean": [s["mean"] for s in stats], "std": [s["std"] for s in stats],
                      "low": [s["p00_5"] for s in stats], "high": [s["p99_5"] for s in stats]}
    else:  # per-case z-score; over the non-zero voxels when they fill under 3/4 of the grid (skull-stripped MRI)
        norm = {"kind": "zscore"} | ({"nonzero": True} if np.median(fp["nonzero_box_fraction"]) < 0.75 else {})
    kwargs = {"features": features} | LEAN_DESIGN
    steps = max(1, math.ceil(len(shapes) * 0.8 / batch))  # one epoch over a 5-fold split's training part
    epochs = int(min(1000, max(10, round(TARGET_STEPS / steps))))
    return Plan(spacing=spacing, median_shape=tuple(int(round(m)) for m in median), window=window,
                batch_size=batch, model="lean_unet", model_kwargs=kwargs, normalization=norm, epochs=epochs, lr=1e-2,
                samples_per_case=1)


def _memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def format_plan(plan: Plan, fp: dict, spec: DatasetSpec) -> str:
    """The plan as the table ``leanseg train`` prints before training."""
    spacings = np.asarray(fp["spacings"])
    shapes = np.asarray(fp["shapes"])
    labels = spec.regions or spec.labels
    rows = [
        ("dataset", f"{spec.name} ({spec.form}, {len(fp['cases'])} cases)"),
        ("channels", ", ".join(spec.channels) + (" (CT)" if spec.ct else "")),
        ("labels" if spec.labels else "regions", ", ".join(f"{k}={v}" for k, v in labels.items())),
        ("spacing (mm)", f"median {_fmt(np.median(spacings, 0))}, range {_fmt(spacings.min(0))} - "
                         f"{_fmt(spacings.max(0))}"),
        ("shape", f"median {_fmt(np.median(shapes, 0))}, range {_fmt(shapes.min(0))} - {_fmt(shapes.max(0))}"),
        ("target spacing", _fmt(plan.spacing)),
        ("median shape there", _fmt(plan.median_shape)),
        ("patch (window)", _fmt(plan.window)),
        ("network", f"{plan.model} {_kwargs(plan.model_kwargs)}" + (f", {plan.weights:,} weights"
                                                                      if plan.weights else "")),
        ("batch size", str(plan.batch_size)),
        ("normalisation", json.dumps(_short_norm(plan.normalization))),
        ("epochs, lr", f"{plan.epochs}, {plan.lr:g} ({plan.optimizer}, poly)"),
        ("augmentation", plan.augmentation),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _fmt(values) -> str:
    return "x".join(f"{float(v):g}" for v in values)


def _kwargs(kwargs: dict) -> str:
    return ", ".join(f"{k}={'-'.join(map(str, v)) if isinstance(v, list | tuple) else v}" for k, v in kwargs.items())


def _short_norm(norm: dict) -> dict:
    return {k: ([round(x, 2) for x in v] if isinstance(v, list) else v) for k, v in norm.items()}


# -------------------------------------------------------------------------------------------------------- task
SYNTHETIC_LABELS = {"background": 0, "anterior": 1, "posterior": 2}


@dataclass
class DatasetConfig(TaskConfig):
    # the synthetic phantoms' until a dataset.json replaces them (discover + configure)
    channels: tuple[str, ...] = ("MRI",)
    labels: dict = field(default_factory=lambda: dict(SYNTHETIC_LABELS))
    # None: taken from the plan (the fingerprint's, or --plan's); a value given here (a flag) wins over both
    window: Any = None
    batch_size: Any = None
    epochs: Any = None
    lr: Any = None
    model: Any = None
    samples_per_case: Any = None
    normalization: Any = None
    spacing: Any = None
    model_kwargs: Any = None
    augmentation: Any = None
    optimizer: Any = None
    schedule: str = "poly"  # nnU-Net's
    weight_decay: float = 3e-5  # nnU-Net's
    plan: Any = None  # a plan.json (path or dict) whose fields replace the derived plan's
    synthetic_size: int = 40


PLANNED = ("window", "batch_size", "epochs", "lr", "model", "samples_per_case", "normalization", "spacing",
           "model_kwargs", "augmentation", "optimizer")
AUGMENTATIONS = ("default", "strong")


class DatasetTask(Task):
    """A dataset folder with a dataset.json (MSD or nnU-Net v2): channels, classes or regions and cases read from
    it; window, network, batch and normalisation planned from a fingerprint of its training cases."""

    name = "dataset"
    Config = DatasetConfig
    config: DatasetConfig

    def __init__(self, config: TaskConfig | None = None, **options):
        super().__init__(config, **options)
        self.spec: DatasetSpec | None = None
        self.plan: Plan | None = None
        self.fingerprint: dict | None = None

    def discover(self, root: str | Path) -> list[dict]:
        self.spec = read_dataset(root)
        return self.spec.cases

    def synthetic(self, n: int, seed: int) -> list[dict]:
        """``n`` hippocampus-like phantoms (two touching structures in a textured 1-channel volume), seeded."""
        from leanseg.synthetic import two_part_phantom

        size = self.config.synthetic_size
        self.spec = DatasetSpec(Path("synthetic"), "synthetic", "synthetic", ("MRI",), dict(SYNTHETIC_LABELS), {},
                                [])
        return seeded_cases(two_part_phantom, n, seed, size, "phantom")

    def configure(self, cases: list[dict]) -> None:
        """Fingerprint the cases (cached in the run folder's fingerprint.json), plan, apply --plan and the flags."""
        spec = self.spec
        if spec is None:
            raise LeanSegError("the dataset task reads its cases with discover() or synthetic() first")
        workdir = self.workdir
        fp = None
        cache = Path(workdir) / "fingerprint.json" if workdir is not None and spec.form != "synthetic" else None
        if cache is not None and cache.is_file():
            try:
                old = json.loads(cache.read_text())
                fp = old if old.get("cases") == [c["id"] for c in cases] else None
            except (OSError, ValueError):
                fp = None
        if fp is None:
            fp = fingerprint(spec, cases, progress=self.progress)
            if cache is not None:
                _write_json(cache, fp)
        self.fingerprint = fp
        plan = plan_from(fp, spec)
        given = self.config.plan
        if given is not None:
            fields = Plan.from_json(_load_json(Path(given)) if isinstance(given, str | Path) else given,
                                    str(given) if isinstance(given, str | Path) else "plan")
            plan = dataclasses.replace(plan, **fields)
        flags = {k: getattr(self.config, k) for k in PLANNED if getattr(self.config, k) is not None}
        if "model_kwargs" in flags and "model" not in flags:  # --features alone: the planned network, other widths
            flags["model_kwargs"] = dict(plan.model_kwargs) | dict(flags["model_kwargs"])
        elif "model" in flags and "model_kwargs" not in flags:  # another network: the planned options it takes
            from leanseg.models import accepted_kwargs

            flags["model_kwargs"] = accepted_kwargs(flags["model"], dict(plan.model_kwargs))
        plan = dataclasses.replace(plan, **flags)
        if isinstance(plan.spacing, str):
            plan.spacing = target_spacing(np.asarray(fp["spacings"], dtype=np.float64))
        self.config = dataclasses.replace(
            self.config, channels=tuple(spec.channels), labels=dict(spec.labels), regions=dict(spec.regions),
            window=plan.window, batch_size=plan.batch_size, epochs=plan.epochs, lr=plan.lr, model=plan.model,
            model_kwargs=dict(plan.model_kwargs), normalization=plan.normalization,
            samples_per_case=plan.samples_per_case, augmentation=plan.augmentation, optimizer=plan.optimizer,
            spacing=None if spec.form == "synthetic" or plan.spacing is None else tuple(plan.spacing))
        try:
            model = self.model()
            plan.weights = sum(p.numel() for p in model.parameters())
        except LeanSegError:
            raise
        except Exception as err:  # a model option the registry's constructor refuses
            raise LeanSegError(f"plan: model {plan.model} cannot be built ({err})") from None
        self.plan = plan

    def plan_report(self, out: Path) -> str | None:
        """Write plan.json beside the checkpoints and return the table to print."""
        if self.plan is None or self.spec is None or self.fingerprint is None:
            return None
        _write_json(Path(out) / "plan.json", self.plan.to_json())
        return format_plan(self.plan, self.fingerprint, self.spec)

    def cache_cases(self, cases: list[dict]) -> bool:
        """Keep the preprocessed cases in memory when they take under 2 GB (hippocampus: about 60 MB)."""
        if self.fingerprint is None:
            return len(cases) <= 64
        voxels = sum(math.prod(s) for s in self.fingerprint["shapes"])
        return voxels * (len(self.config.channels) * 4 + 8) < 2 << 30

    def checkpoint_fields(self) -> dict:
        fields = super().checkpoint_fields()
        if self.spec is not None:
            fields["dataset"] = self.spec.name
        return fields

    def transforms(self, train: bool):
        """Load (resampled to the plan's spacing), crop to the non-zero box when normalising over it, normalise;
        for training, patches with a third forced onto foreground (nnU-Net's oversampling), small rotations and
        scalings, mirroring on every axis and intensity scale/shift."""
        from monai import transforms as T

        cfg = self.config
        keys = ["image", "label"]
        spacing = cfg.spacing if isinstance(cfg.spacing, tuple) else None
        steps: list = [LoadDatasetCase(self.label_manager, len(cfg.channels), spacing)]
        norm = cfg.normalization if isinstance(cfg.normalization, dict) else {}
        if norm.get("nonzero"):
            steps.append(T.CropForegroundd(keys, source_key="image", select_fn=lambda x: x != 0, allow_smaller=True))
        transform = self.normalize_transform()
        if transform is not None:
            steps.append(transform)
        if train:
            ndim = len(cfg.window)
            steps += [
                # cases smaller than the patch are mirrored up to it, as sliding-window inference pads them
                # (leanseg.inference.mirror_pad), so training sees the borders prediction will show it
                T.SpatialPadd(keys, spatial_size=cfg.window, mode="symmetric"),
                T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=cfg.window, pos=1, neg=2,
                                         num_samples=cfg.samples_per_case),
            ]
            steps += _strong_augmentation(keys, ndim) if cfg.augmentation == "strong" else [
                T.RandAffined(keys, prob=0.2, rotate_range=(0.26,) * (3 if ndim == 3 else 1),
                              scale_range=(0.15,) * ndim, mode=("bilinear", "nearest"), padding_mode="zeros"),
                *[T.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(ndim)],
                T.RandScaleIntensityd("image", factors=0.1, prob=0.5),
                T.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            ]
        steps.append(T.EnsureTyped(keys, track_meta=False))
        return T.Compose(steps)

    def loss(self):
        from pipelines._common import dice_bce_loss

        if self.label_manager.sigmoid:
            return dice_bce_loss()
        from monai.losses import DiceCELoss

        # nnU-Net's: Dice over the batch (not per patch), background left out of the Dice term, plus CE
        return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)


def _strong_augmentation(keys: list[str], ndim: int) -> list:
    """nnU-Net's default augmentations as MONAI transforms, with its probabilities: rotation (+-30 degrees) and
    scaling (0.7-1.4) each at 0.2, Gaussian noise 0.1, blur 0.2, brightness 0.15, contrast 0.15, simulated low
    resolution 0.25, gamma 0.3, mirroring on every axis."""
    from monai import transforms as T

    return [
        T.RandAffined(keys, prob=0.2, rotate_range=(0.52,) * (3 if ndim == 3 else 1), mode=("bilinear", "nearest"),
                      padding_mode="zeros"),
        T.RandZoomd(keys, prob=0.2, min_zoom=0.7, max_zoom=1.4, mode=("trilinear" if ndim == 3 else "bilinear",
                                                                      "nearest"), keep_size=True),
        T.RandGaussianNoised("image", prob=0.1, std=0.1),
        T.RandGaussianSmoothd("image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
        T.RandScaleIntensityd("image", factors=0.25, prob=0.15),
        T.RandAdjustContrastd("image", prob=0.15, gamma=(0.75, 1.25)),
        T.RandSimulateLowResolutiond("image", prob=0.25, zoom_range=(0.5, 1.0)),
        T.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
        *[T.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(ndim)],
    ]


class LoadDatasetCase:
    """A case dict -> {"image": (C, ...) float32 at the plan's spacing, "label": encoded target}."""

    def __init__(self, manager, n_channels: int, spacing: tuple[float, ...] | None):
        self.manager = manager
        self.n_channels = n_channels
        self.spacing = spacing

    def __call__(self, case: dict) -> dict:
        from leanseg.spacing import check_resampled, needs_resampling, resample, resample_labels, target_shape

        image, label, spacing = load_case(case, self.n_channels)
        if self.spacing is not None and needs_resampling(spacing, self.spacing):
            shape = target_shape(image.shape[1:], spacing, self.spacing)
            check_resampled(shape, image.shape[0], f"case {case['id']}")
            image, label = resample(image, shape).numpy(), resample_labels(label, shape)
        where = f"case {case['id']}"
        return {"id": case["id"], "image": np.ascontiguousarray(image, dtype=np.float32),
                "label": self.manager.encode(label, where)}


def _write_json(path: Path, data: Any) -> None:
    from leanseg.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def is_dataset_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder with a dataset.json (what ``leanseg train -d`` takes without --task)."""
    return (Path(path) / "dataset.json").is_file()


__all__ = ["DatasetConfig", "DatasetSpec", "DatasetTask", "Plan", "fingerprint", "format_plan", "is_dataset_folder",
           "plan_from", "read_dataset"]
