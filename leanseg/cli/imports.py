"""``--import MODULE``: the user's own modules (custom models), imported before a command builds or loads a model.

Importing runs the module's code, so it happens only because the user named the module here; a checkpoint only
says, in an error, which module registered its model.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import typer

from leanseg.errors import LeanSegError


def import_option():
    """The one ``--import`` option every command that builds or loads a model takes."""
    return typer.Option(None, "--import", metavar="MODULE", help="import this module first, e.g. mynets or "
                        "./mynets.py (repeatable): where your custom models are registered "
                        "(@leanseg.models.register); names are searched in the current folder, then the installed "
                        "packages")


def import_modules(names: list[str] | None) -> None:
    """Import each of ``names`` (a module name or a .py file) as ``python -m`` would from the current folder."""
    for name in names or []:
        if name.endswith(".py"):
            _import_file(Path(name))
            continue
        if os.getcwd() not in sys.path:  # the console script's sys.path lacks the current folder
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                raise LeanSegError(f"--import {name}: no module named {err.name!r} in the current folder or the "
                                   "installed packages") from None
            raise LeanSegError(f"--import {name}: importing it failed ({err})") from None
        except Exception as err:  # the module's own code failed
            raise LeanSegError(f"--import {name}: importing it failed ({type(err).__name__}: {err})") from None


def _import_file(path: Path) -> None:
    """A .py file, imported under its file name (``mynets.py`` -> ``mynets``), the module name a checkpoint of a model
    registered there records."""
    if not path.is_file():
        raise LeanSegError(f"--import {path}: no such file")
    name = path.stem
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LeanSegError(f"--import {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise LeanSegError(f"--import {path}: importing it failed ({type(err).__name__}: {err})") from None
