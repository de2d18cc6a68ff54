"""docs/custom-models.md runs: its code blocks, in order, in a fresh folder. A Python block starting with
``# file: NAME`` is written to NAME; every other Python block runs in a new process (as a reader reloading the
model elsewhere would), and every shell block through bash, with the venv's console scripts on PATH."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).parents[2] / "docs" / "custom-models.md"
BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(PAGE.read_text())


def test_the_page_has_blocks_of_each_kind():
    kinds = [kind for kind, _ in blocks()]
    assert kinds.count("python") >= 4 and kinds.count("sh") >= 3


@pytest.mark.slow  # trains three tiny models and exports one: about a minute on 2 cores
def test_the_custom_models_page_runs(tmp_path):
    pytest.importorskip("onnx", reason="the page exports to ONNX (pip install leanseg[export])")
    env = os.environ | {"OMP_NUM_THREADS": "1",
                        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    for i, (kind, code) in enumerate(blocks()):
        first = code.splitlines()[0]
        if kind == "python" and first.startswith("# file: "):
            (tmp_path / first.removeprefix("# file: ").strip()).write_text(code)
            continue
        command = [sys.executable, "-c", code] if kind == "python" else ["bash", "-euo", "pipefail", "-c", code]
        out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
        assert out.returncode == 0, f"block {i} ({kind}):\n{code}\n{out.stderr}"
    for name in ("box_000_pred.nii.gz", "box_001_pred.nii.gz", "box_002_pred.nii.gz", "tiny3d.onnx"):
        assert (tmp_path / name).is_file(), name
