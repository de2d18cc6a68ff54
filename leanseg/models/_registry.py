"""The model registry: ``create(name, **kwargs)`` and ``available()``.

Constructors register themselves with ``@register``; checkpoints store the name and the keyword arguments,
so a model is rebuilt from JSON without unpickling anything.

Installed packages offer models through the ``leanseg.models`` entry-point group: each entry is a model name and
its constructor (``tiny3d = "mynets:tiny3d"``), imported only when that name is asked for and not registered yet.
Importing a module runs its code, so leanseg imports one only on the user's word: their own ``import``, an entry
point of a package they installed, or ``--import`` on the command line; never because a checkpoint names it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from torch import nn

from leanseg.errors import LeanSegError
from leanseg.options import look_up_option

ModelFn = Callable[..., nn.Module]
ENTRY_POINT_GROUP = "leanseg.models"


@dataclass(frozen=True)
class ModelSpec:
    """How a model was built: its registry name and keyword arguments (set by ``leanseg.models.create``)."""

    name: str
    kwargs: dict = field(default_factory=dict)


_MODELS: dict[str, ModelFn] = {}


def register(fn: ModelFn | None = None, *, name: str | None = None) -> Any:
    """Decorator: register a model constructor under its function name (or ``name``)."""

    def deco(f: ModelFn) -> ModelFn:
        if not callable(f):
            raise LeanSegError(f"register takes a function (or class) that builds an nn.Module, got {f!r}")
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


def _entry_point_names() -> set[str]:
    return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_entry_point(name: str) -> None:
    """Import the package that offers ``name`` under the ``leanseg.models`` entry points, if one does."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            provided = ep.load()
        except Exception as err:  # the package's own import failed: say which entry point
            raise LeanSegError(f"model {name!r}: its entry point {ep.value} cannot be loaded "
                               f"({type(err).__name__}: {err})") from None
        if name in _MODELS:  # the module registered it with @register as it was imported
            return
        if inspect.ismodule(provided) or not callable(provided):
            raise LeanSegError(f"model {name!r}: its entry point {ep.value} is not a function that builds a model "
                               f"and registers no model of that name")
        register(provided, name=name)
        return


def available() -> list[str]:
    """Names of every registered model (and of those installed packages offer as entry points), sorted."""
    return sorted(set(_MODELS) | _entry_point_names())


def is_registered(name: str) -> bool:
    """Whether ``create(name)`` can build ``name`` (entry points are loaded for it)."""
    if name not in _MODELS:
        _load_entry_point(name)
    return name in _MODELS


def registered_by(name: str) -> str | None:
    """The module whose constructor is registered as ``name`` (``"mynets"``), or None for an unknown name."""
    fn = _MODELS.get(name)
    return None if fn is None else fn.__module__


def accepted_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The items of ``kwargs`` that the constructor of ``name`` takes (all of them if it takes ``**kwargs``): a plan
    made for one network handed to another keeps what still applies (widths) and drops the rest."""
    is_registered(name)
    fn = look_up_option(name, _MODELS, what="model")
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C constructor: no signature to read
        return dict(kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(kwargs)
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = {p.name for p in params if p.kind in named}
    return {k: v for k, v in kwargs.items() if k in names}


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with ``kwargs``; an unknown name gets a 'did you mean' error.

    The model records how it was built (``model.build_spec``, as timm's ``pretrained_cfg``), so
    ``leanseg.save_model(model, path)`` needs nothing more to write a checkpoint that rebuilds it.
    """
    is_registered(name)
    model = look_up_option(name, _MODELS, what="model")(**kwargs)
    if not isinstance(model, nn.Module):
        raise LeanSegError(f"model {name!r}: its constructor returned {type(model).__name__}, not an nn.Module")
    model.build_spec = ModelSpec(name, dict(kwargs))  # type: ignore[assignment]  # a plain attribute, not a Module
    return model
