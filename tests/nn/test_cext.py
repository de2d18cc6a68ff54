"""The C library's interface: csrc/leanseg_cpu.h, the ctypes table of _cext.SIGNATURES, the built library and the
wheel's package data all name the same functions with the same parameters."""

import ctypes
import re
from pathlib import Path

import pytest

from leanseg.nn import _cext

CSRC = Path(_cext.__file__).with_name("csrc")
ROOT = Path(__file__).resolve().parents[2]
C_TYPES = {"int64_t": ctypes.c_int64, "int": ctypes.c_int, "float": ctypes.c_float, "double": ctypes.c_double,
           "grid_t": _cext.Grid}


def _header_declarations() -> dict[str, tuple[object, list[tuple[str, object]]]]:
    """name -> (restype, [(argname, ctype)]) for every function declared in leanseg_cpu.h."""
    text = re.sub(r"/\*.*?\*/", "", (CSRC / "leanseg_cpu.h").read_text(), flags=re.S)
    found = {}
    for ret, name, params in re.findall(r"^(void|int)\s+(\w+)\(([^)]*)\);", text, flags=re.M):
        args = []
        for param in params.split(","):
            words = re.findall(r"\w+", param)  # e.g. ["const", "float", "out"], ["int64_t", "n"]
            if words in ([], ["void"]):
                continue
            args.append((words[-1], ctypes.c_void_p if "*" in param else C_TYPES[words[-2]]))
        found[name] = ({"void": None, "int": ctypes.c_int}[ret], args)
    return found


def test_header_and_ctypes_table_agree():
    declared = _header_declarations()
    table = _cext.signatures(simd=True)
    assert len(declared) == 34
    assert set(declared) == set(table)
    for name, (restype, args) in table.items():
        assert declared[name] == (restype, args), name


def test_library_exports_the_table():
    lib = _cext.load()
    if lib is None:
        pytest.skip("no C compiler: the library cannot be built here")
    for name, (restype, args) in _cext.signatures(simd=bool(lib.lean_simd())).items():
        fn = getattr(lib, name)
        assert fn.restype == restype and fn.argtypes == [ctype for _, ctype in args], name
    if not lib.lean_simd():
        assert not any(hasattr(lib, name) for name in _cext.SIMD_ONLY)


def test_package_data_ships_every_source():
    """The wheel carries what _cext compiles: every .c and .h of csrc/ matches the package-data patterns."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["leanseg.nn"]
    sources = sorted(p.name for p in CSRC.iterdir() if p.suffix in (".c", ".h"))
    shipped = sorted({p.name for pattern in patterns for p in CSRC.parent.glob(pattern)})
    assert sources == shipped and "leanseg_cpu.c" in sources


def test_no_file_over_700_lines():
    for path in CSRC.iterdir():
        assert len(path.read_text().splitlines()) <= 700, path.name
