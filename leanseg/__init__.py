"""leanseg: 2D/3D segmentation on the lean convolution of LeanResNet (Ephrath, Ruthotto, Haber, Treister).

Attributes are imported lazily (PEP 562) so that ``leanseg --help`` does not pay for importing torch.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "LeanConv": "leanseg.nn",
    "lean": "leanseg.nn",
    "LeanReport": "leanseg.nn",
    "lean_conv": "leanseg.nn.functional",
    "LeanSegError": "leanseg.errors",
    "save_model": "leanseg.checkpoint",
    "load_model": "leanseg.checkpoint",
    "predict": "leanseg.prediction",
    "segment": "leanseg.prediction",
    "predict_folder": "leanseg.batch",
    "ConvNormAct": "leanseg.nn",
    "ResidualBlock": "leanseg.nn",
    "DownBlock": "leanseg.nn",
    "UpBlock": "leanseg.nn",
    "LeanUNet": "leanseg.models",
    "LeanResNet": "leanseg.models",
}


# subpackages reachable as attributes after a bare ``import leanseg`` (``leanseg.models.create(...)``)
_SUBMODULES = ("models", "nn", "training", "tasks", "io", "inference", "checkpoint", "zoo", "metrics", "ensemble")


def __getattr__(name):
    if name in _SUBMODULES:
        return import_module(f"leanseg.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'leanseg' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS) + list(_SUBMODULES))


__all__ = sorted(_EXPORTS)
