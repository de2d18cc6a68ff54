"""The CLI: instant --help (no torch import), one-line errors with exit code 2, the conv benchmark's table."""

import subprocess
import sys

from leanseg.cli.main import main


def test_help_does_not_import_torch():
    code = "import sys; from leanseg.cli.main import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_conv_prints_a_table(capsys):
    assert main(["bench", "conv", "--dims", "2,3", "--channels", "4", "--size", "6", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "fwd+bwd" in out and "fast/floor" in out
    table = [line for line in out.splitlines() if line.startswith(("2 |", "3 |"))]
    assert len(table) == 4  # (2D, 3D) x (fwd, fwd+bwd)


def test_bad_option_value_is_one_line_exit_2(capsys):
    assert main(["bench", "conv", "--dims", "4", "--channels", "4", "--size", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["leanseg: error: --dims must be 2 or 3, got 4"]


def test_usage_errors_exit_2(capsys):
    assert main(["bench", "conv", "--no-such-option"]) == 2
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err
