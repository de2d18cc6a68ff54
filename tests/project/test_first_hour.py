"""What a new user meets first: ``leanseg.models`` after a bare ``import leanseg``, and checkpoints that colleagues
can read (the umask, not 0600)."""

import os
import subprocess
import sys


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
