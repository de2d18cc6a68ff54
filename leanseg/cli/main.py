"""``leanseg``: one console script, one typer app; each command is a plain function in its own module of
leanseg.cli, registered here (the command modules do not import this one, so there is no cycle).

Modules here import no torch at import time so that ``leanseg --help`` is instant; commands import what they
need when they run. A LeanSegError raised by the API is printed as one line and exits with code 2.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import typer

from leanseg.cli._help import CONTEXT, LeanCommand, LeanGroup
from leanseg.cli.bench_batch import bench_batch
from leanseg.cli.bench_brats import bench_brats
from leanseg.cli.bench_conv import bench_conv
from leanseg.cli.bench_export import bench_export
from leanseg.cli.bench_faults import bench_faults
from leanseg.cli.bench_msd import bench_msd
from leanseg.cli.bench_predict import bench_predict
from leanseg.cli.bench_seg2d import bench_seg2d
from leanseg.cli.bench_stream import bench_stream
from leanseg.cli.bench_unet import bench_unet
from leanseg.cli.crossval_cmd import crossval_cmd
from leanseg.cli.demo_cmd import demo_cmd
from leanseg.cli.evaluate_cmd import evaluate_cmd
from leanseg.cli.export_cmd import export_cmd
from leanseg.cli.models_cmd import models
from leanseg.cli.postprocess_cmd import postprocess_select_cmd
from leanseg.cli.predict_cmd import predict_cmd
from leanseg.cli.train_cmd import TrainCommand, train_cmd
from leanseg.errors import LeanSegError, LeanSegWarning

app = typer.Typer(
    name="leanseg",
    help="2D/3D segmentation (NIfTI, SEG-Y, images) on the lean convolution of LeanResNet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=LeanGroup,
    context_settings=CONTEXT,
)
bench_app = typer.Typer(help="Benchmarks that print tables (speed, memory, weights).", no_args_is_help=True,
                        cls=LeanGroup, context_settings=CONTEXT)
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        from leanseg import __version__

        typer.echo(f"leanseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="print the version and exit")):
    """2D/3D segmentation (NIfTI, SEG-Y, images) on the lean convolution of LeanResNet."""


# in the order `leanseg --help` lists them
_COMMANDS: list[tuple[typer.Typer, str, Callable[..., Any]]] = [
    (app, "models", models), (app, "train", train_cmd), (app, "demo", demo_cmd), (app, "predict", predict_cmd),
    (app, "evaluate", evaluate_cmd), (app, "crossval", crossval_cmd),
    (app, "postprocess-select", postprocess_select_cmd), (app, "export", export_cmd),
    (bench_app, "conv", bench_conv), (bench_app, "unet", bench_unet), (bench_app, "stream", bench_stream),
    (bench_app, "brats", bench_brats), (bench_app, "predict", bench_predict), (bench_app, "export", bench_export),
    (bench_app, "faults", bench_faults), (bench_app, "seg2d", bench_seg2d), (bench_app, "msd", bench_msd),
    (bench_app, "batch", bench_batch),
]
for _app, _name, _fn in _COMMANDS:
    _app.command(_name, cls=TrainCommand if _fn is train_cmd else LeanCommand)(_fn)


def _note(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line each: 'leanseg: note: ...' for ours, the category name for others'."""
    tag = "note" if issubclass(category, LeanSegWarning) else category.__name__
    print(f"leanseg: {tag}: {message}", file=sys.stderr)


class Terminated(BaseException):
    """SIGTERM (kill, a batch scheduler's time limit) or SIGUSR1 (what SLURM's ``--signal=USR1@120`` and other
    schedulers send before preempting a job), raised in the main thread so that everything unwinds as for Ctrl-C
    (partial outputs removed; training keeps the state of its last finished epoch for ``--resume``) and the command
    exits 128 + the signal's number (143, 138). A BaseException, so typer does not turn it into a return value, and no
    ``except Exception`` swallows it."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = int(signum)


# the signals that end a command cleanly, beside SIGINT (Ctrl-C)
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def _terminate(signum, frame):
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    # nibabel logs the header fields it repairs (a zero voxel size becomes 1, an invalid code 0) straight to stderr;
    # the CLI's contract is one line per problem, so only its errors that stop a read reach the user, as ours
    logging.getLogger("nibabel").setLevel(logging.CRITICAL)
    warnings.showwarning = _note
    # SIGTERM and SIGUSR1 (a batch scheduler's time limit or preemption notice) unwind like Ctrl-C, so half-written
    # outputs are removed
    if threading.current_thread() is threading.main_thread():
        for stop in _STOP_SIGNALS:
            signal.signal(stop, _terminate)
    try:
        # in non-standalone mode typer returns the exit code of a KeyboardInterrupt (130) instead of raising it
        code = app(args=argv, standalone_mode=False, prog_name="leanseg")
    except LeanSegError as err:
        print(f"leanseg: error: {err}", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("leanseg: interrupted", file=sys.stderr)
        return 130
    except Terminated as stop:
        print(f"leanseg: interrupted ({signal.Signals(stop.signum).name})", file=sys.stderr)
        return 128 + stop.signum
    except typer.Exit as ex:
        return ex.exit_code
    except typer.TyperException as err:  # usage errors: unknown option, bad value, missing argument: one line
        ctx = getattr(err, "ctx", None)
        where = f" (see {ctx.command_path} -h)" if ctx is not None else ""
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        print(f"leanseg: error: {' '.join(message.split())}{where}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    if code == 130:  # Ctrl-C, which typer caught: a run that did not finish never reports success
        print("leanseg: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
