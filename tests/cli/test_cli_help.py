"""The CLI's conventions: -h and --help on every command, --version, help without Python-type metavars, the real
defaults in the help, and a `leanseg models` table without broken rows."""

import re
import subprocess
import sys

import pytest
import typer

import leanseg
from leanseg.cli.main import app, main

# what typer prints for a Python annotation: <bool>, <int>, <str>, <path>, <list[Path]>, <tuple[int, int]>...
PYTHON_TYPE = re.compile(r"<(bool|int|float|str|path|file|directory|list\[.*?\]|tuple\[.*?\]|dict\[.*?\])>", re.I)


def _commands(group=None, prefix=()):
    group = group or typer.main.get_command(app)
    yield prefix
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*prefix, name))


COMMANDS = list(_commands())


def test_every_command_is_walked():
    assert {"train", "predict", "export"} <= {c[0] for c in COMMANDS if c} and ("bench", "conv") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "leanseg")
def test_help_has_no_python_types_and_h_is_help(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "Usage:" in text and not PYTHON_TYPE.search(text), PYTHON_TYPE.findall(text)
    assert main([*command, "-h"]) == 0
    assert capsys.readouterr().out == text


def test_version():
    out = subprocess.run([sys.executable, "-m", "leanseg", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"leanseg {leanseg.__version__}", out.stderr


def test_help_states_real_defaults(capsys, monkeypatch):
    from leanseg.options import MAX_OVERLAP

    monkeypatch.setenv("COLUMNS", "200")
    main(["predict", "-h"])
    predict = " ".join(capsys.readouterr().out.split())
    assert f"from 0 to {MAX_OVERLAP}" in predict
    main(["train", "-h"])
    train = " ".join(capsys.readouterr().out.split())
    assert "brats: 300 epochs, batch 2, window 128x128x128" in train  # the task defaults, read from the tasks
    assert "data_cards" not in train  # not shipped in the package
    # one device default for both commands
    device = re.compile(r"--device\s+TEXT\s+(.*?)\[default: (\w+)\]")
    assert device.search(train).groups() == device.search(predict).groups() == (
        "cpu, cuda, cuda:N or auto (cuda when there is one) ", "auto")


def test_models_lists_every_registered_model_with_its_weights(capsys):
    from leanseg.models import available

    assert main(["models", "--input", "1x32x32x32"]) == 0
    rows = [[cell.strip() for cell in line.split("|")] for line in capsys.readouterr().out.splitlines()
            if "|" in line][1:]
    assert {r[0] for r in rows} == set(available())
    for row in rows:
        if row[0] != "averaged":  # a container of other models: it has no weights of its own
            assert row[2].replace(",", "").isdigit(), row
    assert {r[0] for r in rows} >= {"faultseg3d_unet", "monai_unet", "monai_dynunet"}
