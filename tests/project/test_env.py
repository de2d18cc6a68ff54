"""leanseg.env: every environment flag is read there, with its default, and nowhere else in leanseg."""

import ast
from pathlib import Path

from leanseg import env

ROOT = Path(__file__).resolve().parents[2]


def test_defaults(monkeypatch):
    for name in ("LEANSEG_BACKEND", "LEANSEG_CEXT", "LEANSEG_CACHE", "LEANSEG_MALLOC_TUNE", "TRITON_INTERPRET", "CC"):
        monkeypatch.delenv(name, raising=False)
    assert env.backend() == "auto"
    assert env.cext_enabled() and env.malloc_tune()
    assert env.cache_dir() == Path.home() / ".cache" / "leanseg"
    assert env.c_compiler() is None and env.triton_interpret() is False


def test_values(monkeypatch, tmp_path):
    monkeypatch.setenv("LEANSEG_BACKEND", "reference")
    monkeypatch.setenv("LEANSEG_CEXT", "0")
    monkeypatch.setenv("LEANSEG_MALLOC_TUNE", "off")
    monkeypatch.setenv("LEANSEG_CACHE", str(tmp_path))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert env.backend() == "reference"
    assert not env.cext_enabled() and not env.malloc_tune()
    assert env.cache_dir() == tmp_path
    assert env.triton_interpret() is True
    monkeypatch.setenv("LEANSEG_CEXT", "1")
    assert env.cext_enabled()


def _environ_reads(path: Path) -> list[int]:
    """Lines of ``path`` that read os.environ or call os.getenv."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                and node.attr in ("environ", "getenv"):
            lines.append(node.lineno)
    return lines


def test_flags_are_read_in_one_module_per_package():
    allowed = {"leanseg/env.py", "kernels3d/__init__.py"}
    reads = {str(p.relative_to(ROOT)): _environ_reads(p) for pkg in ("leanseg", "kernels3d")
             for p in sorted((ROOT / pkg).rglob("*.py"))}
    assert {p: lines for p, lines in reads.items() if lines and p not in allowed} == {}
    assert len(_environ_reads(ROOT / "kernels3d" / "__init__.py")) == 1  # TRITON_INTERPRET, in interpret()
