"""Checkpoints: one ``.safetensors`` file holding the weights and, in its header, a JSON config.

The config is read in one place, into a typed :class:`CheckpointMeta` (validated, with defaults), which
``leanseg.predict``, ``leanseg evaluate`` and training all use. It rebuilds the model through the registry
(``leanseg.models.create(model, **model_kwargs)``), so loading never unpickles anything: a checkpoint from a
stranger can at worst hold wrong numbers. A custom model's checkpoint names the module that registered it
(``model_module``) so that an error can say what to import; loading never imports it (only the user does). Any
other ``nn.Module`` saves its weights too, and ``load_model(path, model=MyNet())`` fills an instance the user
builds. The JSON is readable without leanseg:
``safetensors.safe_open(path, "np").metadata()["leanseg"]``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leanseg.errors import LeanSegError
from leanseg.io._files import atomic_path
from leanseg.labels import LabelManager
from leanseg.postprocess import Postprocess

if TYPE_CHECKING:
    from leanseg.models._registry import ModelSpec

FORMAT = "leanseg-checkpoint"
# Refuse, before allocating, a config that asks for more weights than any segmentation network needs (2 GB float32):
# a checkpoint's JSON is untrusted input, and "features": [100000] must not take the machine down.
MAX_WEIGHTS = 500_000_000
VERSION = 1
_KEY = "leanseg"  # the safetensors metadata entry that holds the JSON config
NORMALIZATIONS = ("none", "zscore", "fixed", "ct")


@dataclass(frozen=True)
class Normalization:
    """Intensity normalisation applied before the model, the same in training and prediction.

    ``zscore``: per channel, from the volume's own robust statistics (``leanseg.normalize``; ``nonzero``: over
    non-zero voxels only, the brain of a skull-stripped scan, leaving the background at 0). ``fixed``: per-channel
    ``mean``/``std`` (CIFAR). ``ct``: nnU-Net's CT scheme, the same for every case: clip to ``low``/``high`` (the
    training foreground's 0.5 and 99.5 percentiles), then subtract ``mean`` and divide by ``std`` (of the clipped
    foreground), per channel.
    """

    kind: str = "none"
    nonzero: bool = False
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in NORMALIZATIONS:
            raise LeanSegError(f"normalization {self.kind!r} is unknown; choose from {', '.join(NORMALIZATIONS)}")
        if self.kind in ("fixed", "ct"):
            import math

            names = ("mean", "std", "low", "high") if self.kind == "ct" else ("mean", "std")
            values = {n: tuple(getattr(self, n)) for n in names}
            lengths = {len(v) for v in values.values()}
            numbers = all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                          for v in values.values() for x in v)
            if not values["mean"] or len(lengths) != 1 or not numbers:
                raise LeanSegError(f"{self.kind} normalization needs finite numbers {', '.join(names)} of one "
                                   f"length, got {', '.join(str(list(v)) for v in values.values())}")
            if min(abs(s) for s in values["std"]) == 0:
                raise LeanSegError(f"{self.kind} normalization std {values['std']} has a zero")
            if self.kind == "ct" and any(lo > hi for lo, hi in zip(values["low"], values["high"], strict=True)):
                raise LeanSegError(f"ct normalization low {values['low']} above high {values['high']}")
            for n, v in values.items():
                object.__setattr__(self, n, tuple(float(x) for x in v))

    @classmethod
    def parse(cls, spec) -> Normalization:
        """From JSON: "zscore", {"kind": "zscore", "nonzero": true}, {"kind": "fixed", "mean": [...], ...}."""
        if spec is None:
            return cls()
        if isinstance(spec, str):
            return cls(kind=spec)
        if not isinstance(spec, Mapping):
            raise LeanSegError(f"normalization must be a name or an object, got {spec!r}")
        unknown = set(spec) - {"kind", "nonzero", "mean", "std", "low", "high"}
        if unknown:
            raise LeanSegError(f"normalization has unknown fields {sorted(unknown)}")
        lists = {}
        for name in ("mean", "std", "low", "high"):
            value = spec.get(name, ())
            if not isinstance(value, list | tuple):
                raise LeanSegError(f"normalization {name} must be a list of numbers, got {value!r}")
            lists[name] = tuple(value)
        return cls(kind=spec.get("kind", "none"), nonzero=bool(spec.get("nonzero", False)), **lists)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"kind": self.kind}
        if self.nonzero:
            out["nonzero"] = True
        if self.kind in ("fixed", "ct"):
            out |= {"mean": list(self.mean), "std": list(self.std)}
        if self.kind == "ct":
            out |= {"low": list(self.low), "high": list(self.high)}
        return out

    def transform(self, stats_from=None, keys: str | Sequence[str] | None = None):
        """A transform doing this normalisation on ``(C, ...)`` arrays (or on the ``keys`` of a dict); None for
        "none".

        ``stats_from``: a ``(C, ...)`` sample whose statistics stand for the whole volume (streamed cubes).
        """
        if self.kind == "none":
            return None
        if self.kind == "fixed":
            from monai.transforms import NormalizeIntensity, NormalizeIntensityd

            kwargs: dict[str, Any] = {"subtrahend": list(self.mean), "divisor": list(self.std), "channel_wise": True}
            return NormalizeIntensityd(keys, **kwargs) if keys is not None else NormalizeIntensity(**kwargs)
        from leanseg.normalize import ChannelStats, ZScore, volume_stats

        if self.kind == "ct":  # fixed statistics: every volume (and every window of a stream) the same way
            fixed = [ChannelStats(*v) for v in zip(self.low, self.high, self.mean, self.std, strict=True)]
            return ZScore(False, stats=fixed, keys=keys)
        stats = volume_stats(stats_from, self.nonzero) if stats_from is not None else None
        return ZScore(self.nonzero, stats=stats, keys=keys)


def model_spec(model) -> ModelSpec | None:
    """How to rebuild ``model`` from the registry: the spec ``create`` set, or the registry name of a leanseg class
    that holds its own config (LeanUNet, LeanResNet, the fault net); completed by the model's ``config``."""
    from leanseg.models._registry import ModelSpec

    spec = getattr(model, "build_spec", None)
    own = getattr(model, "config", None)
    if isinstance(spec, ModelSpec):
        return ModelSpec(spec.name, dict(own) if isinstance(own, dict) else dict(spec.kwargs))
    # the class itself, not a user's subclass of it, which may build something else
    name = type(model).__dict__.get("registry_name")
    if isinstance(name, str) and isinstance(own, dict):
        return ModelSpec(name, dict(own))
    return None


@dataclass(frozen=True)
class CheckpointMeta:
    """The JSON config of a checkpoint, typed. ``extra`` keeps anything else (epoch, metrics, seed, data...)."""

    model: str  # registry name, e.g. "lean_unet"
    model_kwargs: dict  # keyword arguments of leanseg.models.create, e.g. {"spatial_dims": 3, "in_channels": 4, ...}
    task: str | None = None  # the task that trained it, e.g. "brats"
    channels: tuple[str, ...] = ()  # input channel names in order; case folders are searched for them
    labels: dict[str, int] = field(default_factory=dict)  # softmax classes {name: value}, output order; or
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)  # sigmoid regions {name: [values]}
    normalization: Normalization = field(default_factory=Normalization)
    window: tuple[int, ...] | None = None  # the sliding window the model was trained with
    postprocess: Postprocess = field(default_factory=Postprocess)  # component rules applied to the label map
    # voxel size (mm, canonical RAS axis order) the model was trained at; predict resamples inputs to it. None:
    # checkpoints from before it existed, and data where a millimetre means nothing (images, SEG-Y, synthetic)
    spacing: tuple[float, ...] | None = None
    # the module whose constructor is registered as ``model``, for custom models (not leanseg's own): named in the
    # error when it is not imported, never imported because a checkpoint says so
    model_module: str | None = None
    # False: the weights of a plain nn.Module (``model`` is its class name), which only
    # ``load_model(path, model=instance)`` can fill
    registered: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise LeanSegError(f"checkpoint 'model' must be a registry name, got {self.model!r}")
        if self.model_module is not None and (not isinstance(self.model_module, str) or not self.model_module):
            raise LeanSegError(f"checkpoint 'model_module' must be a module name, got {self.model_module!r}")
        if not isinstance(self.registered, bool):
            raise LeanSegError(f"checkpoint 'registered' must be true or false, got {self.registered!r}")
        for name, example in (("labels", "{'background': 0, 'tumour': 1}"), ("regions", "{'WT': [1, 2, 4]}")):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise LeanSegError(f"{name} must map names to label values, e.g. {name}={example}; got {value!r}")
        if not isinstance(self.model_kwargs, Mapping):
            raise LeanSegError(f"checkpoint 'model_kwargs' must be an object, got {type(self.model_kwargs).__name__}")
        if isinstance(self.channels, str) or not all(isinstance(c, str) for c in self.channels):
            raise LeanSegError(f"checkpoint 'channels' must be a list of names, got {self.channels!r}")
        object.__setattr__(self, "channels", tuple(self.channels))
        if not isinstance(self.normalization, Normalization):
            object.__setattr__(self, "normalization", Normalization.parse(self.normalization))
        if self.window is not None:
            window = [self.window] if isinstance(self.window, int) else self.window
            if (not isinstance(window, Sequence) or not window
                    or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in window)):
                raise LeanSegError(f"checkpoint 'window' must be positive integers, got {self.window!r}")
            object.__setattr__(self, "window", tuple(window))
        if self.labels or self.regions:  # validated (and regions made tuples) by the label manager
            manager = LabelManager(labels=dict(self.labels), regions=dict(self.regions))
            object.__setattr__(self, "labels", manager.labels)
            object.__setattr__(self, "regions", manager.regions)
            outputs = self.model_kwargs.get("out_channels", self.model_kwargs.get("num_classes"))
            if isinstance(outputs, int) and not isinstance(outputs, bool) and manager.num_outputs != outputs:
                raise LeanSegError(f"checkpoint names {manager.num_outputs} {manager.kind} but the model has "
                                   f"{outputs} outputs")
        rules = Postprocess.parse(self.postprocess, where="checkpoint 'postprocess'")
        if rules:  # the rules name classes or regions: checked against this model's outputs
            rules.check(self.label_manager, "checkpoint 'postprocess'")
        object.__setattr__(self, "postprocess", rules)
        bad = _non_finite(self.model_kwargs)
        if bad is not None:
            raise LeanSegError(f"checkpoint model_kwargs {bad} is not a finite number")
        for name in ("spatial_dims", "in_channels", "out_channels", "num_classes"):
            value = self.model_kwargs.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096):
                raise LeanSegError(f"checkpoint model_kwargs {name}={value!r} is not an integer in 1..4096")
        if self.spacing is not None:
            from leanseg.spacing import parse_spacing

            spacing = parse_spacing(self.spacing, what="checkpoint 'spacing'")
            if spacing is not None and self.spatial_dims is not None and len(spacing) != self.spatial_dims:
                raise LeanSegError(f"checkpoint 'spacing' {list(spacing)} does not fit a {self.spatial_dims}D model")
            object.__setattr__(self, "spacing", spacing)
        if self.window is not None and self.spatial_dims is not None and len(self.window) != self.spatial_dims:
            raise LeanSegError(f"checkpoint 'window' {list(self.window)} does not fit a {self.spatial_dims}D model")
        channels = self.in_channels
        kind = self.normalization.kind
        if kind in ("fixed", "ct") and channels is not None and len(self.normalization.mean) != channels:
            raise LeanSegError(f"checkpoint {kind} normalization has {len(self.normalization.mean)} values for "
                               f"{channels} input channels")

    # -------------------------------------------------------------------------------------------------- views
    @property
    def spatial_dims(self) -> int | None:
        return self.model_kwargs.get("spatial_dims")

    @property
    def in_channels(self) -> int | None:
        return self.model_kwargs.get("in_channels")

    @property
    def out_channels(self) -> int | None:
        return self.model_kwargs.get("out_channels", self.model_kwargs.get("num_classes"))

    @property
    def label_manager(self) -> LabelManager:
        return LabelManager.from_config(self.labels, self.regions, self.out_channels)

    # --------------------------------------------------------------------------------------------------- JSON
    _FIELDS = ("model", "model_kwargs", "task", "channels", "labels", "regions", "normalization", "window",
               "postprocess", "spacing", "model_module", "registered")

    @classmethod
    def from_json(cls, config: Mapping, source: str | os.PathLike | None = None) -> CheckpointMeta:
        """From a checkpoint's JSON (``format``/``version`` included or not); errors name ``source``."""
        config = dict(config)
        config.pop("format", None)
        config.pop("version", None)
        known = {k: config.pop(k) for k in cls._FIELDS if k in config}
        try:
            if "model" not in known or "model_kwargs" not in known:
                raise LeanSegError("the config needs 'model' and 'model_kwargs' to rebuild the model")
            return cls(**known, extra=config)
        except LeanSegError as err:
            raise LeanSegError(f"{source}: {err}" if source is not None else str(err)) from None
        except TypeError as err:
            raise LeanSegError(f"{source}: malformed checkpoint config ({err})") from None

    def to_json(self) -> dict:
        out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "model": self.model,
                               "model_kwargs": _plain(self.model_kwargs)}
        if self.model_module is not None:
            out["model_module"] = self.model_module
        if not self.registered:
            out["registered"] = False
        if self.task is not None:
            out["task"] = self.task
        if self.channels:
            out["channels"] = list(self.channels)
        if self.labels or self.regions:
            out |= LabelManager(labels=dict(self.labels), regions=dict(self.regions)).to_json()
        out["normalization"] = self.normalization.to_json()
        if self.window is not None:
            out["window"] = list(self.window)
        if self.postprocess:
            out["postprocess"] = self.postprocess.to_json()
        if self.spacing is not None:
            out["spacing"] = list(self.spacing)
        return out | _plain(self.extra)

    def replace(self, **changes) -> CheckpointMeta:
        """A copy with fields changed; unknown names go to ``extra``."""
        fields = {f.name for f in dataclasses.fields(self)}
        extra = dict(self.extra) | {k: v for k, v in changes.items() if k not in fields}
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if k in fields}, extra=extra)


def _non_finite(value, where: str = "") -> str | None:
    """The path of the first NaN or infinite number in a JSON value (``"negative_slope=nan"``), or None."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return f"{where}={value}"
    if isinstance(value, Mapping):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for name, item in items:
        found = _non_finite(item, name)
        if found is not None:
            return found
    return None


def _plain(value):
    """JSON-able copy: tuples to lists, numpy/torch scalars to numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def save_model(model, path: str | os.PathLike, meta: CheckpointMeta | None = None, /, **fields) -> Path:
    """Write ``model``'s weights and its config to ``path`` (a ``.safetensors`` file), atomically.

    A model built by ``leanseg.models.create`` (or a registered constructor), or one of leanseg's own classes
    (LeanUNet, LeanResNet, the fault net: they hold their config), knows how to rebuild itself, so
    ``save_model(model, "m.safetensors")`` just works. Any other ``nn.Module`` is saved with its class name; only
    ``load_model(path, model=MyNet())`` can fill it. ``meta`` (a :class:`CheckpointMeta`, e.g. the one
    ``load_model`` returned) or keyword ``fields`` add what prediction needs: ``task``, ``channels``, ``labels``
    {name: value} or ``regions`` {name: [values]}, ``normalization``, ``window``; other keywords (epoch,
    metrics...) are kept as extra JSON.
    """
    import torch
    from safetensors.torch import save_file

    if isinstance(model, str | os.PathLike):
        raise LeanSegError(f"save_model(model, path) takes the network first, got the path {str(model)!r}")
    if not isinstance(model, torch.nn.Module):
        raise LeanSegError(f"save_model takes an nn.Module, got {type(model).__name__}")
    if meta is not None and not isinstance(meta, CheckpointMeta):
        raise LeanSegError(f"save_model's third argument is a CheckpointMeta (as load_model returns), got "
                           f"{type(meta).__name__}; give fields as keywords, e.g. labels={{'background': 0, ...}}")
    if meta is None:
        # model= (a registry name) given: it says what the weights are; else the model says it
        fields = (_custom_module(fields["model"]) if "model" in fields else describe_model(model)) | fields
        meta = CheckpointMeta.from_json(fields, source=path)
    elif fields:
        meta = meta.replace(**fields)
    try:
        text = json.dumps(meta.to_json())
    except TypeError as err:  # a model_kwargs or extra value JSON cannot hold (a class, an array...)
        raise LeanSegError(f"{path}: the checkpoint config must be plain JSON values ({err})") from None
    from leanseg.io._files import as_path

    path = as_path(path, "save_model's path")
    if not path.parent.is_dir():
        raise LeanSegError(f"{path}: the folder {path.parent} does not exist")
    # safetensors refuses tensors that share memory; a state_dict can hold such views (tied weights)
    weights = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
               for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(weights, str(tmp), metadata={_KEY: text})
    return path


def update_config(path: str | os.PathLike, **extra) -> None:
    """Rewrite a checkpoint's JSON with ``extra`` fields added (e.g. ``finished=True`` once its run ended), weights
    unchanged, atomically."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    config = read_meta(path).to_json() | extra
    text = json.dumps(CheckpointMeta.from_json(config, source=path).to_json())
    weights = load_file(str(path))
    with atomic_path(path) as tmp:
        save_file(weights, str(tmp), metadata={_KEY: text})


def describe_model(model) -> dict[str, Any]:
    """The checkpoint fields that say what ``model`` is: its registry name and arguments (and, for a custom model,
    the module that registered it), or for a plain nn.Module its class name and module, ``registered`` false."""
    spec = model_spec(model)
    if spec is None:
        cls = type(model)
        return {"model": cls.__qualname__, "model_kwargs": {}, "model_module": cls.__module__, "registered": False}
    return {"model": spec.name, "model_kwargs": spec.kwargs} | _custom_module(spec.name)


def _custom_module(name) -> dict[str, str]:
    """{"model_module": module} when ``name`` is registered by a module outside leanseg."""
    from leanseg.models._registry import registered_by

    module = registered_by(name) if isinstance(name, str) else None
    return {"model_module": module} if module is not None and module.partition(".")[0] != "leanseg" else {}


def read_meta(path: str | os.PathLike) -> CheckpointMeta:
    """The config of a checkpoint (a path or a zoo name, see leanseg.zoo), without building the model."""
    from safetensors import safe_open

    from leanseg.zoo import resolve

    path = resolve(path)
    if not path.is_file():
        raise LeanSegError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), "pt") as f:
            config = json.loads((f.metadata() or {})[_KEY])
    except KeyError:
        raise LeanSegError(f"{path}: not a leanseg checkpoint (no '{_KEY}' config in the safetensors header)") from None
    except Exception as err:  # SafetensorError, JSONDecodeError, OSError
        raise LeanSegError(f"{path}: corrupt or not a safetensors checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise LeanSegError(f"{path}: not a leanseg checkpoint (its config lacks format/model)")
    return CheckpointMeta.from_json(config, source=path)


def load_model(path: str | os.PathLike, model=None):
    """The model of a checkpoint (a path or a zoo name, see leanseg.zoo) on the CPU in eval mode; returns
    ``(model, meta)``.

    Without ``model`` the registry rebuilds it from the checkpoint's config; a custom model's module must be
    imported first (or installed with a ``leanseg.models`` entry point). With ``model`` (an instance the caller
    built, ``MyNet()``), the weights are loaded into it, every name and shape checked.
    """
    import torch

    from leanseg.zoo import resolve

    if model is not None:
        if isinstance(model, type):
            raise LeanSegError(f"model= takes an instance, {model.__name__}(...), not the class")
        if not isinstance(model, torch.nn.Module):
            raise LeanSegError(f"model= takes an nn.Module instance, got {type(model).__name__}")
    path = resolve(path)
    meta = read_meta(path)
    net = _build(path, meta) if model is None else model
    _fill(path, net, meta)
    return net.eval(), meta


def _build(path: Path, meta: CheckpointMeta):
    """The registry's model for ``meta``, its size checked on the meta device before anything is allocated."""
    import torch

    import leanseg.models  # registers the models
    from leanseg.models._registry import is_registered

    if not meta.registered:
        raise LeanSegError(f"{path}: it holds the weights of {meta.model} (module {meta.model_module}), which is not "
                           f"a registered model: build one and pass it, leanseg.load_model(path, "
                           f"model={meta.model}(...)), or register a constructor with @leanseg.models.register")
    if not is_registered(meta.model) and meta.model_module:
        if meta.model_module == "__main__":
            raise LeanSegError(f"{path}: model {meta.model!r} was registered in a script or notebook (__main__): move "
                               "it into a module to load it elsewhere, or pass model= to leanseg.load_model")
        raise LeanSegError(f"{path}: model {meta.model!r} was registered by module {meta.model_module!r}: pass "
                           f"--import {meta.model_module} (in Python: import {meta.model_module} first)")
    try:
        with torch.device("meta"):  # count the weights the config asks for without allocating them
            probe = leanseg.models.create(meta.model, **meta.model_kwargs)
        count = sum(t.numel() for t in [*probe.parameters(), *probe.buffers()])
        if count > MAX_WEIGHTS:
            raise LeanSegError(f"its config asks for {count:,} weights (more than {MAX_WEIGHTS:,}); "
                               "refusing to build it")
        _check_tensors_against_header(path, probe.state_dict(), meta.model)
        return leanseg.models.create(meta.model, **meta.model_kwargs)
    except LeanSegError as err:
        raise LeanSegError(f"{path}: {err}") from None
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LeanSegError(f"{path}: cannot build model {meta.model!r} from its config ({first})") from None


def _fill(path: Path, model, meta: CheckpointMeta) -> None:
    """Load the checkpoint's weights into ``model``: every tensor name and shape must match (one-line error)."""
    import torch
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path))
    except Exception as err:  # truncated data
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LeanSegError(f"{path}: weights do not load into {meta.model!r} ({first})") from None
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        problems.append(f"{k} is {list(weights[k].shape)} in the checkpoint, {list(own[k].shape)} in the "
                        f"model{more}")
    if problems:
        raise LeanSegError(f"{path}: weights do not fit {type(model).__name__} ({'; '.join(problems)})")
    for name, tensor in weights.items():  # a NaN weight would predict background everywhere, silently
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise LeanSegError(f"{path}: tensor {name!r} holds NaN or infinite values; the checkpoint is broken")
    model.load_state_dict(weights, strict=True)


def _check_tensors_against_header(path: Path, expected: Mapping, model: str) -> None:
    """Compare the tensors a config asks for (names, shapes; from a meta-device probe) with those the file's header
    lists, before any allocation: a 5 kB file whose config asks for 489M weights is refused here, not after
    gigabytes."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        stored = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    wanted = {name: tuple(t.shape) for name, t in expected.items()}
    missing, extra = sorted(set(wanted) - set(stored)), sorted(set(stored) - set(wanted))
    if missing or extra:
        what = (f"missing {len(missing)} tensors ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
                if missing else f"{len(extra)} unexpected tensors ({', '.join(extra[:3])}"
                                f"{', ...' if len(extra) > 3 else ''})")
        raise LeanSegError(f"weights do not load into {model!r}: {what}")
    for name, shape in wanted.items():
        if stored[name] != shape:
            raise LeanSegError(f"weights do not load into {model!r}: tensor {name!r} is {list(stored[name])} in the "
                               f"file, the model needs {list(shape)}")


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


__all__ = ["CheckpointMeta", "Normalization", "describe_model", "load_model", "model_spec", "read_meta",
           "save_model", "update_config"]
