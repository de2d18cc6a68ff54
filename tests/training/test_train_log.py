"""What `leanseg train` writes to a log file (stdout and stderr not terminals): the run table first, then one line
per epoch with the loss, the validation score and the time, and no per-batch progress bars."""

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow  # a training run in a subprocess: about 15 s on 2 cores
def test_a_non_interactive_log_has_a_run_table_and_one_line_per_epoch(tmp_path):
    out = subprocess.run([sys.executable, "-m", "leanseg", "train", "--task", "seg2d", "--synthetic", "4", "--epochs",
                          "2", "--features", "4,8,16", "-o", str(tmp_path / "run")],
                         capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    table = lines[lines.index("run:") + 1:]
    for key in ("task", "cases", "window", "model", "device", "schedule", "output"):
        assert any(line.split()[0] == key for line in table[:7]), table
    assert re.search(r"model\s+lean_unet, [\d,]+ weights", out.stdout)
    epochs = [line for line in lines if line.startswith("epoch ")]
    pattern = (r"epoch [12]/2  loss \d+\.\d{4}  val dice disc \d\.\d{4} rectangle \d\.\d{4} \(mean \d\.\d{4}\)  "
               r"\d+\.\d s")
    assert len(epochs) == 2 and all(re.fullmatch(pattern, line) for line in epochs), epochs
    assert "\r" not in out.stderr and "it/s" not in out.stderr, out.stderr  # no tqdm bars
