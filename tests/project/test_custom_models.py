"""Custom models end to end, across processes as users meet them: trained and saved in one Python process,
predicted from the CLI in another with ``--import``; the module named when it is missing; installed packages'
models found through the ``leanseg.models`` entry points; a plain nn.Module filled with ``load_model(model=...)``."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

MYNETS = '''
import torch
import leanseg


@leanseg.models.register
def tiny3d(spatial_dims=3, in_channels=1, out_channels=2, width=4):
    conv = torch.nn.Conv3d if spatial_dims == 3 else torch.nn.Conv2d
    return torch.nn.Sequential(conv(in_channels, width, 3, padding=1), torch.nn.ReLU(), conv(width, out_channels, 1))


class PlainNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x)
'''


def make_dataset(root: Path, n: int = 4, shape=(12, 12, 10)) -> Path:
    """A tiny MSD-style dataset folder: imagesTr, labelsTr and dataset.json, two labels in boxes."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(n):
        label = np.zeros(shape, np.uint8)
        label[2:6, 3:8, 2:7], label[6:10, 3:8, 2:7] = 1, 2
        image = rng.normal(0, 0.3, shape).astype(np.float32) + 1.5 * label
        for folder, array in (("imagesTr", image), ("labelsTr", label)):
            nib.save(nib.Nifti1Image(array, np.eye(4)), root / folder / f"toy_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/toy_{i:03d}.nii.gz", "label": f"./labelsTr/toy_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "Toy", "modality": {"0": "MR"}, "labels": {"0": "background", "1": "front", "2": "back"},
        "numTraining": n, "training": training}))
    return root


def _python(code: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          env=os.environ | {"OMP_NUM_THREADS": "1"} | env)


def _leanseg(args: list, cwd: Path) -> subprocess.CompletedProcess:
    """The console script as a user runs it (its sys.path does not hold the current folder, unlike python -c)."""
    script = Path(sys.executable).with_name("leanseg")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "leanseg"]
    return subprocess.run(command + [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})


@pytest.fixture
def project(tmp_path):
    (tmp_path / "mynets.py").write_text(MYNETS)
    make_dataset(tmp_path / "Task99_Toy")
    return tmp_path


@pytest.mark.slow  # five processes, each importing torch: about 20 s on 2 cores
def test_train_in_one_process_predict_from_the_cli_in_another(project):
    trained = _python("""
        import mynets, leanseg
        from leanseg.training import TrainConfig, train

        result = train("dataset", data="Task99_Toy", model="tiny3d", epochs=1,
                       config=TrainConfig(out="run", progress=False))
        labels = leanseg.predict("Task99_Toy/imagesTr/toy_000.nii.gz", "run/best.safetensors", output="py.nii.gz",
                                 progress=False)
        print(leanseg.checkpoint.read_meta("run/best.safetensors").model_module)
    """, project)
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.split()[-1] == "mynets"  # the checkpoint records who registered the model

    image = project / "Task99_Toy" / "imagesTr" / "toy_000.nii.gz"
    missing = _leanseg(["predict", image, "-m", "run/best.safetensors", "-o", "cli.nii.gz"], project)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "model 'tiny3d' was registered by module 'mynets': pass --import mynets" in missing.stderr
    assert not (project / "cli.nii.gz").exists()

    done = _leanseg(["predict", image, "-m", "run/best.safetensors", "-o", "cli.nii.gz", "--import", "mynets",
                     "--no-progress"], project)
    assert done.returncode == 0, done.stderr
    cli, py = (np.asarray(nib.load(project / name).dataobj) for name in ("cli.nii.gz", "py.nii.gz"))
    assert cli.shape == (12, 12, 10) and np.array_equal(cli, py)

    # a .py file works as well, and an unknown module is named in one line
    assert _leanseg(["predict", image, "-m", "run/best.safetensors", "-o", "file.nii.gz", "--import",
                     "./mynets.py", "--no-progress"], project).returncode == 0
    wrong = _leanseg(["predict", image, "-m", "run/best.safetensors", "--import", "mynest"], project)
    assert wrong.returncode == 2 and "no module named 'mynest'" in wrong.stderr, wrong.stderr


@pytest.mark.slow  # about 10 s
def test_train_from_the_cli_with_import(project):
    done = _leanseg(["train", "-d", "Task99_Toy", "--import", "mynets", "--model", "tiny3d", "--epochs", "1",
                     "-o", "run"], project)
    assert done.returncode == 0, done.stderr
    loaded = _python("""
        import mynets, leanseg
        net, meta = leanseg.load_model("run/best.safetensors")
        print(type(net).__name__, meta.model, meta.model_module)
    """, project)
    assert loaded.stdout.split() == ["Sequential", "tiny3d", "mynets"], loaded.stderr


def test_an_installed_package_offers_models_through_entry_points(project):
    """A package's ``leanseg.models`` entry point is loaded the first time its model name is asked for."""
    site = project / "site"
    dist = site / "mynets_pkg-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mynets-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[leanseg.models]\ntiny3d = mynets:tiny3d\n")
    shutil.move(project / "mynets.py", site / "mynets.py")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    done = _python("""
        import sys, leanseg
        assert "tiny3d" in leanseg.models.available() and "mynets" not in sys.modules  # listed, not imported
        net = leanseg.models.create("tiny3d", in_channels=2)
        leanseg.save_model(net, "ep.safetensors")
        print(leanseg.load_model("ep.safetensors")[1].model_module)
    """, project, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["mynets"]
    fresh = _python("""
        import leanseg
        net, meta = leanseg.load_model("ep.safetensors")  # no import: the entry point brings the model
        print(meta.model, net[0].in_channels)
    """, project, **env)
    assert fresh.stdout.split() == ["tiny3d", "2"], fresh.stderr


def test_a_plain_module_reloads_in_another_process(project):
    saved = _python("""
        import mynets, leanseg
        leanseg.save_model(mynets.PlainNet(), "plain.safetensors", labels={"bg": 0, "a": 1, "b": 2})
    """, project)
    assert saved.returncode == 0, saved.stderr
    loaded = _python("""
        import mynets, leanseg, torch
        net, meta = leanseg.load_model("plain.safetensors", model=mynets.PlainNet())
        print(meta.model, meta.model_module, meta.registered, net.conv.weight.shape[0])
    """, project)
    assert loaded.stdout.split() == ["PlainNet", "mynets", "False", "3"], loaded.stderr
    cli = _leanseg(["predict", project / "Task99_Toy" / "imagesTr" / "toy_000.nii.gz", "-m", "plain.safetensors",
                    "--import", "mynets"], project)
    assert cli.returncode == 2 and "model=PlainNet(...)" in cli.stderr and cli.stderr.count("\n") == 1
