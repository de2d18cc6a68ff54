"""What a new user meets first: ``leanseg.models`` after a bare ``import leanseg``, checkpoints that colleagues
can read (the umask, not 0600), an install without Triton, and a notebook cell that registers a model run twice."""

import os
import subprocess
import sys

import pytest


def test_bare_import_reaches_the_model_registry():
    code = ("import leanseg; net = leanseg.models.create('lean_unet', spatial_dims=3, in_channels=1, "
            "out_channels=2, features=(4, 8)); print(type(net).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "LeanUNet", out.stderr


def test_checkpoints_follow_the_umask(tmp_path):
    import leanseg
    from leanseg.models import create

    net = create("lean_unet", spatial_dims=3, in_channels=1, out_channels=2, features=(4, 8))
    old = os.umask(0o022)
    try:
        path = leanseg.save_model(net, tmp_path / "m.safetensors")
        assert os.stat(path).st_mode & 0o777 == 0o644
        os.umask(0o077)
        path = leanseg.save_model(net, tmp_path / "private.safetensors")
        assert os.stat(path).st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_registering_the_same_function_again_is_allowed():
    import pytest

    from leanseg.models import create, register

    code = "def tiny_net(**kw):\n    return torch.nn.Conv3d(1, 2, 1)\n"
    namespace: dict = {"torch": __import__("torch"), "__name__": "notebook_cell"}
    from leanseg.models._registry import _MODELS

    try:
        for _ in range(2):  # the same cell run twice
            exec(compile(code, "<cell>", "exec"), namespace)
            register(namespace["tiny_net"])
        assert create("tiny_net").weight.shape[0] == 2

        def tiny_net(**kw):  # another function under the taken name
            return None

        with pytest.raises(ValueError, match="registered twice"):
            register(tiny_net)
    finally:
        _MODELS.pop("tiny_net", None)  # other tests list the registry


def test_triton_is_an_extra_not_a_dependency():
    """`pip install leanseg` on a CPU machine does not pull Triton (about 1 GB); [gpu] and [dev] (CI) do."""
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("triton")]
    extras = project["optional-dependencies"]
    assert any(d.startswith("triton") for d in extras["gpu"]) and any(d.startswith("triton") for d in extras["dev"])


def test_leanseg_works_without_triton():
    """`import leanseg`, a lean model's forward and backward, and `leanseg --help` where Triton is missing; the
    kernels say what is missing."""
    code = (
        "import sys; sys.modules['triton'] = None  # 'import triton' raises ImportError\n"
        "import torch, pytest, leanseg, kernels3d\n"
        "net = leanseg.models.create('lean_unet', spatial_dims=3, in_channels=1, out_channels=2, features=(4, 8))\n"
        "net(torch.randn(1, 1, 8, 8, 8)).sum().backward()\n"
        "assert not kernels3d.available()\n"
        "with pytest.raises(ImportError, match='needs Triton'): kernels3d.lean_conv(None, None, None)\n"
        "from leanseg.cli.main import main\n"
        "assert main(['--help']) == 0\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
