"""Ctrl-C (SIGINT) and SIGTERM end a command with exit 130 / 143 and one line, never with success; nothing
half-written is left under the output's name."""

import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

CLI = [sys.executable, "-c", "import sys; from leanseg.cli.main import main; sys.exit(main())"]


def _interrupt(argv, ready, sig, timeout=120.0):
    """Start the CLI, wait until ``ready()`` holds, send ``sig``; returns (exit code, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(CLI + [str(a) for a in argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    start = time.monotonic()
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the command ended before the signal: {proc.stderr.read() if proc.stderr else ''}")
            if time.monotonic() - start > timeout:
                pytest.fail("the command never got ready")
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err.strip()


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_interrupted_training_does_not_report_success(tmp_path, sig, code):
    out = tmp_path / "run"
    argv = ["train", "--task", "dataset", "--synthetic", "6", "--epochs", "500", "--features", "4,8", "-o", out,
            "--window", "16", "--no-postprocess"]
    rc, err = _interrupt(argv, lambda: (out / "metrics.csv").exists(), sig)
    assert rc == code, err
    assert err.splitlines()[-1].startswith("leanseg: interrupted"), err
    assert (out / "train_state.safetensors").is_file()  # what --resume continues from
    if sig == signal.SIGUSR1:  # a preempted job's next run continues from the last finished epoch
        done = len((out / "metrics.csv").read_text().splitlines()) - 1
        resume = [str(a) for a in argv] + ["--resume"]
        resume[resume.index("--epochs") + 1] = str(done + 2)
        run = subprocess.run(CLI + resume, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                             timeout=300)
        assert run.returncode == 0, run.stderr
        assert len((out / "metrics.csv").read_text().splitlines()) - 1 == done + 2


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_predict_leaves_no_output(tmp_path, sig, code):
    import torch

    import leanseg
    from leanseg.models import create

    torch.manual_seed(0)
    net = create("lean_unet", spatial_dims=3, in_channels=1, out_channels=2, features=(4, 8))
    model = tmp_path / "m.safetensors"
    leanseg.save_model(net, model, labels={"background": 0, "fg": 1}, window=[16, 16, 16])
    image = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(128, 128, 96)).astype(np.float32), np.eye(4)),
             image)
    output = tmp_path / "pred.nii.gz"
    started = tmp_path / "started"

    def ready():  # the model file was opened and a second has passed: predict is in its sliding window
        if not started.exists():
            started.write_text("")
            return False
        return time.time() - started.stat().st_mtime > 3

    rc, err = _interrupt(["predict", image, "-m", model, "-o", output, "--tta", "--overlap", "0.75", "--no-progress"],
                         ready, sig)
    assert rc == code, err
    assert err.splitlines()[-1].startswith("leanseg: interrupted"), err
    assert not output.exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_folder_run_keeps_only_whole_cases(tmp_path, sig, code):
    """A folder run stopped after its first case: the exit code says so, the finished case is whole, no partial
    file is left, and the same command then finishes the rest."""
    import torch

    import leanseg
    from leanseg.cli.main import main
    from leanseg.models import create

    torch.manual_seed(0)
    net = create("lean_unet", spatial_dims=3, in_channels=1, out_channels=2, features=(4, 8))
    model = tmp_path / "m.safetensors"
    leanseg.save_model(net, model, labels={"background": 0, "fg": 1}, window=[16, 16, 16])
    cases = tmp_path / "in"
    cases.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        nib.save(nib.Nifti1Image(rng.normal(size=(48, 48, 32)).astype(np.float32), np.eye(4)),
                 cases / f"case_{i}.nii.gz")
    out = tmp_path / "out"
    argv = ["predict", cases, "-o", out, "-m", model, "--tta", "--no-progress"]
    rc, err = _interrupt(argv, lambda: out.is_dir() and any(p.name.startswith("case_") for p in out.iterdir()), sig)
    assert rc == code, err
    assert err.splitlines()[-1].startswith("leanseg: interrupted"), err
    assert not [p for p in out.iterdir() if "partial" in p.name]
    done = sorted(p.name for p in out.glob("case_*"))
    assert 1 <= len(done) < 6, done
    for name in done:  # whole files: every one reads
        assert nib.load(out / name).get_fdata().shape == (48, 48, 32)
    assert main([str(a) for a in argv]) == 0
    assert len(list(out.glob("case_*"))) == 6
