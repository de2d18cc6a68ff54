"""The CLI: instant --help (no torch import), one-line errors with exit code 2, the conv benchmark's table."""

import math
import subprocess
import sys

import pytest

from leanseg.cli.main import main


def test_help_does_not_import_torch():
    code = "import sys; from leanseg.cli.main import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_conv_prints_a_table(capsys):
    assert main(["bench", "conv", "--dims", "2,3", "--channels", "4", "--size", "6", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "fwd+bwd" in out and "fast/floor" in out
    table = [[cell.strip() for cell in line.split("|")] for line in out.splitlines() if line.startswith(("2 |", "3 |"))]
    assert len(table) == 4  # (2D, 3D) x (fwd, fwd+bwd)
    for row in table:
        fast_ms, floor_ratio = float(row[8].split()[0]), float(row[10])
        assert 0 <= fast_ms < math.inf and 0 < floor_ratio < math.inf, row  # a time, and a floor to divide it by


def test_bad_option_value_is_one_line_exit_2(capsys):
    assert main(["bench", "conv", "--dims", "4", "--channels", "4", "--size", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["leanseg: error: --dims must be 2 or 3, got 4"]


def test_usage_errors_exit_2(capsys):
    assert main(["bench", "conv", "--no-such-option"]) == 2
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_command_modules_do_not_import_main():
    """main.py registers the command functions; no command module imports it back (tests/project/test_import_graph)."""
    code = ("import sys; import leanseg.cli.predict_cmd, leanseg.cli.train_cmd, leanseg.cli.bench_conv; "
            "assert 'leanseg.cli.main' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("models", "train", "demo", "predict", "evaluate", "bench"))
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("conv", "unet", "stream", "brats"))


@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "brast", "--synthetic", "2"], "unknown task 'brast'; did you mean 'brats'?"),
    (["train", "--task", "brats", "--synthetic", "2", "--schedule", "cosin"],
     "unknown schedule 'cosin'; did you mean 'cosine'?"),
    (["train", "--task", "brats", "--synthetic", "2", "--window", "64,0,64"],
     "--window '64,0,64': sizes must be positive integers"),
    (["train", "--task", "brats", "--synthetic", "2", "--window", "64,64"],
     "--window '64,64': needs 1 or 3 sizes for 3D data, got 2"),
    (["train", "--task", "brats", "--synthetic", "2", "--device", "mps"], "--device 'mps': not supported"),
    (["predict", "x.nii.gz", "-m", "m.safetensors", "--window", "big"],
     "--window 'big': expected an integer or comma-separated integers"),
])
def test_option_errors_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"leanseg: error: {message}"), err


@pytest.mark.parametrize("argv, message", [
    (["bench", "export", "--size", "0"], "--size must be at least 16"),
    (["bench", "export", "--size", "20"], "--size must be a multiple of 16"),
    (["bench", "stream", "--size-gb", "-1"], "--size-gb must be at least"),
    (["bench", "stream", "--window", "a,b"], "--window 'a,b'"),
    (["bench", "faults", "--cases", "0"], "--cases must be at least 2"),
    (["bench", "brats", "--features", "a,b"], "--features 'a,b'"),
    (["bench", "brats", "--epochs", "0"], "--epochs must be at least 1"),
    (["bench", "seg2d", "--epochs", "0"], "--epochs must be at least 1"),
])
def test_bench_options_are_checked_before_any_work(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().startswith(f"leanseg: error: {message}") and captured.err.count("\n") == 1
    assert captured.out == "" and list(tmp_path.iterdir()) == []
