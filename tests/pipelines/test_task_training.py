"""A few training steps on each task's synthetic data lower the loss; bad input through the CLI gives exit 2."""

import numpy as np
import pytest
import torch

from leanseg.cli.main import main
from leanseg.training import TrainConfig, train

TINY = {
    "brats": dict(synthetic_size=24, model_kwargs={"features": (4, 8)}, batch_size=2, samples_per_case=1),
    "faults": dict(synthetic_size=24, model_kwargs={"features": (4, 8)}, batch_size=1, samples_per_case=2),
    "seg2d": dict(synthetic_size=32, model_kwargs={"features": (4, 8, 16)}),
    "cifar": dict(batch_size=8, model_kwargs={"variant": "B", "widths": (8, 16), "steps": (1, 1)}),
}


@pytest.mark.parametrize("task, cases", [("brats", 4), ("faults", 5), ("seg2d", 8), ("cifar", 64)])
def test_training_lowers_the_loss(tmp_path, task, cases):
    options = TINY[task] | ({} if task == "cifar" else {"hd95": False})
    result = train(task, synthetic=cases, config=TrainConfig(out=tmp_path, progress=False, val_every=4), epochs=4,
                   lr=1e-2, **options)
    losses = result.step_losses
    k = max(2, len(losses) // 4)
    assert np.mean(losses[-k:]) < np.mean(losses[:k]), losses
    assert (tmp_path / "last.safetensors").exists() and (tmp_path / "metrics.csv").exists()


def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_cli_bad_input(tmp_path, capsys):
    import nibabel as nib

    code, err = _run(["train", "--task", "brain", "--synthetic", "2"], capsys)
    assert code == 2 and err.count("\n") == 0 and "unknown task 'brain'" in err

    code, err = _run(["train", "--task", "brats", "--data", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 0 and "no BraTS cases" in err

    case = tmp_path / "BraTS2021_00007"
    case.mkdir()
    for m in ("t1", "t2", "flair"):
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), case / f"BraTS2021_00007_{m}.nii.gz")
    code, err = _run(["train", "--task", "brats", "--data", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 0
    assert "BraTS2021_00007_t1ce.nii.gz" in err and "BraTS2021_00007_seg.nii.gz" in err

    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), case / "BraTS2021_00007_t1ce.nii.gz")
    seg = np.zeros((8, 8, 8), np.uint8)
    seg[2:4] = 3  # BraTS 2021 has no label 3
    nib.save(nib.Nifti1Image(seg, np.eye(4)), case / "BraTS2021_00007_seg.nii.gz")
    code, err = _run(["train", "--task", "brats", "--data", str(tmp_path), "--epochs", "1", "--out",
                      str(tmp_path / "run")], capsys)
    assert code == 2 and err.count("\n") == 0 and "label values [3]" in err


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "0"], "epochs must be at least 1"),
    (["--epochs", "-1"], "epochs must be at least 1"),
    (["--batch-size", "0"], "batch_size must be at least 1"),
    (["--lr", "nan"], "lr must be a positive number"),
    (["--window", "0"], "--window '0': sizes must be positive"),
    (["--workers", "-1"], "must be 0 or more"),
    (["--device", "cuda"], "--device"),
    (["--out", "/proc/leanseg-run"], "cannot create the output folder"),
])
def test_cli_bad_training_options(tmp_path, capsys, extra, message):
    argv = ["train", "--task", "seg2d", "--synthetic", "4", "--out", str(tmp_path / "run"), *extra]
    code, err = _run(argv, capsys)
    assert code == 2 and err.count("\n") == 0 and message in err, err
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_tampered_train_state_is_one_line(tmp_path, capsys):
    from safetensors.torch import save_file

    run = tmp_path / "run"
    run.mkdir()
    save_file({"model.x": torch.zeros(1)}, str(run / "train_state.safetensors"),
              metadata={"leanseg_train_state": '{"epoch": "zero"}'})
    code, err = _run(["train", "--task", "seg2d", "--synthetic", "4", "--out", str(run), "--resume"], capsys)
    assert code == 2 and err.count("\n") == 0 and "train_state.safetensors" in err, err


def test_a_plain_module_trains_and_fills_an_instance(tmp_path):
    """Any nn.Module trains; its checkpoint holds the weights and the meta, and load_model(model=...) fills one."""
    import leanseg
    from leanseg.errors import LeanSegError

    def build(task):
        return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))

    result = train("seg2d", synthetic=4, config=TrainConfig(out=tmp_path, progress=False), epochs=1,
                   synthetic_size=32, build_model=build)
    path = tmp_path / "best.safetensors"
    net, meta = leanseg.load_model(path, model=build(None))
    assert not meta.registered and meta.model == "Sequential" and meta.in_channels == 1 and meta.out_channels == 3
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(net(x), result.model.eval()(x))
    with pytest.raises(LeanSegError, match=r"model=Sequential\(\.\.\.\)") as err:
        leanseg.load_model(path)  # nothing can rebuild it from the config alone
    assert "\n" not in str(err.value)


def test_a_registered_custom_model_trains_saves_and_predicts(tmp_path, monkeypatch):
    """The promise of custom models: one decorator, then train, save and predict like a built-in one."""
    import leanseg
    from leanseg.models import _registry

    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))  # registered for this test only

    @leanseg.models.register
    def tiny_custom(spatial_dims, in_channels, out_channels):
        return torch.nn.Sequential(leanseg.LeanConv(spatial_dims, in_channels, 8),
                                   torch.nn.ReLU(), torch.nn.Conv2d(8, out_channels, 1))

    result = train("seg2d", synthetic=4, config=TrainConfig(out=tmp_path / "run", progress=False), epochs=1,
                   model="tiny_custom", model_kwargs={}, synthetic_size=32)
    model, meta = leanseg.load_model(tmp_path / "run" / "last.safetensors")
    assert meta.model == "tiny_custom" and result.model is not None
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(model(x), result.model.eval()(x))
