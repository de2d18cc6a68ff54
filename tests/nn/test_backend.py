"""leanseg.nn.backend: LEANSEG_BACKEND=reference runs a whole model as plain PyTorch, with no compiled library."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from leanseg.models import LeanUNet
from leanseg.nn import _cext, backend

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh process, so that nothing loaded by other tests can hide a load: a LeanUNet forward in inference
# and a forward + backward in training, recording every ctypes.CDLL call; then saves the outputs and what loaded
# (the CDLL calls, the calls of _cext.load, and whether a library of leanseg's cache is mapped in the process).
SCRIPT = """
import ctypes, sys, torch
loaded = []
real_cdll = ctypes.CDLL
def recording_cdll(name, *args, **kwargs):
    loaded.append(str(name))
    return real_cdll(name, *args, **kwargs)
ctypes.CDLL = recording_cdll
from leanseg.models import LeanUNet
from leanseg import env
from leanseg.nn import _cext
torch.manual_seed(0)
model = LeanUNet(3, 2, 3, features=(8, 16, 24)).double()
x = torch.randn(1, 2, 9, 10, 11, dtype=torch.float64)
with torch.no_grad():
    y_eval = model.eval()(x)
model.train()
y = model(x)
y.square().sum().backward()
maps = open("/proc/self/maps").read()
torch.save({"eval": y_eval, "train": y.detach(), "grad": model.encoder[1].body.conv.stencil.grad,
            "cdll": loaded, "load_calls": _cext.load.cache_info().misses,
            "so_mapped": str(env.cache_dir()) in maps}, sys.argv[1])
"""


def _run(tmp_path: Path, **environ: str) -> dict:
    out = tmp_path / "out.pt"
    env = {**os.environ, **environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True, env=env, cwd=ROOT, timeout=300)
    return torch.load(out)


@pytest.mark.slow
def test_reference_backend_loads_no_library_and_agrees(tmp_path):
    ref = _run(tmp_path, LEANSEG_BACKEND="reference")
    assert ref["cdll"] == [] and ref["load_calls"] == 0 and not ref["so_mapped"]
    fast = _run(tmp_path, LEANSEG_BACKEND="auto")
    if _cext.load() is not None:  # the default backend does use the library where it builds
        assert fast["load_calls"] == 1 and fast["so_mapped"]
    for key in ("eval", "train", "grad"):
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-9, atol=1e-10, msg=lambda m, k=key: f"{k}: {m}")


def test_reference_backend_everywhere(monkeypatch):
    x = torch.randn(1, 2, 5, 6)
    monkeypatch.setenv("LEANSEG_BACKEND", "reference")
    assert backend.lean_conv_backend(x) == "reference"
    assert backend.c_library(x) is None
    monkeypatch.setenv("LEANSEG_BACKEND", "auto")
    assert backend.lean_conv_backend(x) == "cpu"
    assert backend.lean_conv_backend(x.half()) == "reference"  # no C kernels for float16
    assert backend.c_library(x.half()) is None
    assert backend.c_library(x.bfloat16(), dtypes=(torch.float32,)) is None


def test_layers_ask_the_dispatcher(monkeypatch):
    """Under LEANSEG_BACKEND=reference no layer of a LeanUNet reaches the C library (here in-process: the
    subprocess test above checks that it is not even loaded)."""
    monkeypatch.setenv("LEANSEG_BACKEND", "reference")

    def fail(*args, **kwargs):
        raise AssertionError("the C library was requested under LEANSEG_BACKEND=reference")

    monkeypatch.setattr(_cext, "load", fail)
    model = LeanUNet(2, 1, 2, features=(8, 16))
    x = torch.randn(2, 1, 12, 13)
    with torch.no_grad():
        model.eval()(x)
    model.train()(x).sum().backward()
