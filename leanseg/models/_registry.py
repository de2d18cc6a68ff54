"""The model registry: ``create(name, **kwargs)`` and ``available()``.

Constructors register themselves with ``@register``; checkpoints store the name and the keyword arguments,
so a model is rebuilt from JSON without unpickling anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from leanseg.options import look_up_option

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """How a model was built: its registry name and keyword arguments (set by ``leanseg.models.create``)."""

    name: str
    kwargs: dict = field(default_factory=dict)


_MODELS: dict[str, ModelFn] = {}


def register(fn: ModelFn | None = None, *, name: str | None = None) -> Any:
    """Decorator: register a model constructor under its function name (or ``name``)."""

    def deco(f: ModelFn) -> ModelFn:
        key = name or f.__name__
        old = _MODELS.get(key)
        # the same function registered again (a notebook cell run twice, a module reloaded) replaces itself;
        # another function under a taken name is a mistake
        if old is not None and (old.__module__, old.__qualname__) != (f.__module__, f.__qualname__):
            raise ValueError(f"model {key!r} is registered twice ({old.__module__}.{old.__qualname__} and "
                             f"{f.__module__}.{f.__qualname__})")
        _MODELS[key] = f
        return f

    return deco(fn) if fn is not None else deco


def available() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs``; an unknown name gets a 'did you mean' error.

    The model records how it was built (``model.build_spec``, as timm's ``pretrained_cfg``), so
    ``leanseg.save_model(model, path)`` needs nothing more to write a checkpoint that rebuilds it.
    """
    model = look_up_option(name, _MODELS, what="model")(**kwargs)
    model.build_spec = ModelSpec(name, dict(kwargs))  # type: ignore[assignment]  # a plain attribute, not a Module
    return model
