"""The model registry: ``create(name, **kwargs)`` and ``available()``.

Constructors register themselves with ``@register``; checkpoints store the name and the keyword arguments,
so a model is rebuilt from JSON without unpickling anything.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from leanseg.errors import LeanSegError

_MODELS: dict[str, Callable] = {}


def register(fn: Callable | None = None, *, name: str | None = None):
    """Decorator: register a model constructor under its function name (or ``name``)."""

    def deco(f):
        key = name or f.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is registered twice")
        _MODELS[key] = f
        return f

    return deco(fn) if fn is not None else deco


def available() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def create(name: str, **kwargs):
    """Build the registered model ``name`` with ``kwargs``; an unknown name gets a 'did you mean' error.

    The model records how it was built (``model.build_spec``, as timm's ``pretrained_cfg``), so
    ``leanseg.save_model(model, path)`` needs nothing more to write a checkpoint that rebuilds it.
    """
    from leanseg.checkpoint import ModelSpec

    fn = _MODELS.get(name)
    if fn is None:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; available: {', '.join(available())}"
        raise LeanSegError(f"unknown model {name!r}{hint}")
    model = fn(**kwargs)
    model.build_spec = ModelSpec(name, dict(kwargs))
    return model
