"""A few training steps on each task's synthetic data lower the loss; bad input through the CLI gives exit 2."""

import numpy as np
import pytest

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
