"""Help that reads like a Unix tool's: ``-h`` as well as ``--help``, and value placeholders in words (PATH, TEXT,
INTEGER, NUMBER), never Python types (``<list[Path]>``) or ``<bool>`` after a flag.

Recent typer prints each parameter's Python annotation as its metavar. Our command and group classes keep typer's
layout and only change that column: each parameter's class is swapped, when the help is built, for a subclass
that adds no state and overrides only how its type is shown.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

HELP_NAMES = ["-h", "--help"]
CONTEXT = {"help_option_names": HELP_NAMES}

# what a Python type shown by typer ("<int>", "<list[Path]>") becomes
_WORDS = {"int": "INTEGER", "float": "NUMBER", "str": "TEXT", "path": "PATH", "file": "PATH", "directory": "PATH"}


def _word(param: Any, shown: str | None) -> str | None:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None  # a flag takes no value
    if param.metavar:
        return param.metavar
    if not shown:
        return shown
    text = shown.removesuffix("...").strip("<>")
    text = text.removeprefix("list[").removesuffix("]").removesuffix("...")
    return _WORDS.get(text.lower(), text.upper())


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        return _word(self, super().display_type_rich(ctx))


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return _word(self, super().display_type_rich(ctx))


def _plain(params: list) -> list:
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _Option
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
    return params


class LeanCommand(TyperCommand):
    """A leanseg command: typer's, with the help described above."""

    def get_params(self, ctx: Any) -> list:
        return _plain(super().get_params(ctx))


class LeanGroup(TyperGroup):
    """The ``leanseg`` and ``leanseg bench`` groups: typer's, with the help described above."""

    def get_params(self, ctx: Any) -> list:
        return _plain(super().get_params(ctx))
