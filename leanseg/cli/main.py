"""``leanseg``: one console script, one typer app; each command lives in its own module of leanseg.cli.

Modules here import no torch at import time so that ``leanseg --help`` is instant; commands import what they
need when they run. A LeanSegError raised by the API is printed as one line and exits with code 2.
"""

from __future__ import annotations

import sys
from importlib import import_module

import typer

from leanseg.errors import LeanSegError

app = typer.Typer(
    name="leanseg",
    help="2D/3D segmentation (NIfTI, SEG-Y, images) on the lean convolution of LeanResNet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks that print tables (speed, memory, weights).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# Each module registers its commands on `app` / `bench_app` when imported.
_COMMAND_MODULES = ["bench_conv", "bench_unet", "models_cmd", "train_cmd", "demo_cmd", "predict_cmd", "evaluate_cmd",
                    "bench_stream", "bench_brats", "bench_seg2d"]
for _name in _COMMAND_MODULES:
    import_module(f"leanseg.cli.{_name}")


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, standalone_mode=False)
    except LeanSegError as err:
        print(f"leanseg: error: {err}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("leanseg: aborted", file=sys.stderr)
        return 130
    except typer.Exit as ex:
        return ex.exit_code
    except typer.TyperException as err:  # usage errors: unknown option, bad value, missing argument
        show = getattr(err, "show", None)
        show() if show else print(f"leanseg: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    return 0
