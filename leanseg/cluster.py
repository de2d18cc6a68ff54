"""Cases, and the inline slabs of one SEG-Y survey, on a Dask cluster (``pip install 'leanseg[distributed]'``).

leanseg has no scheduler of its own: ``scheduler`` is the address of a running Dask scheduler (``dask scheduler``
and ``dask worker`` on the machines, or dask-jobqueue on a batch cluster), ``workers`` starts a ``LocalCluster`` of
that many single-threaded worker processes. The client only schedules and reports: each worker loads the model once
(a ``Predictor`` cached in the worker process, keyed by a token of the model and options), reads its inputs and
writes its outputs itself, so the inputs and the output folder must be on a file system every worker sees.

A SEG-Y survey goes slab by slab (``leanseg.prediction.predict_segy_on_cluster``): the client bins the headers (to
count the inlines), writes the output's text and binary headers into a partial file pre-sized to the whole output,
and sends each slab (its inlines plus a halo) to a worker, which predicts it as the single-process stream does
(``leanseg.stitch.SlabStitcher``) and writes its traces at their byte offsets. A journal beside the partial file
lists the slabs written, so a killed run resumes by slab; the partial file is renamed onto the output when every
slab is in.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from leanseg.errors import LeanSegError

_CONNECT_TIMEOUT = "10s"  # an address nobody answers at fails after this
_WORKER_WAIT = 60.0  # seconds an existing cluster may take to have a worker, and may go without one mid-run
_POLL = 2.0  # seconds between checks that the cluster still has workers


@contextmanager
def connect(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``scheduler``, or of a new local cluster of ``workers``
    single-threaded worker processes (closed on exit)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise LeanSegError("scheduler and workers need Dask: pip install 'leanseg[distributed]'") from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=_CONNECT_TIMEOUT)
        except (OSError, ValueError, TypeError) as err:
            raise LeanSegError(f"{scheduler}: no Dask scheduler answers there ({error_line(err)}); start one "
                               "(dask scheduler) or use workers for a local cluster") from None
        with client:
            try:
                client.wait_for_workers(1, timeout=_WORKER_WAIT)
            except (TimeoutError, OSError):
                raise LeanSegError(f"{scheduler}: the Dask scheduler has no worker after {_WORKER_WAIT:.0f} s; start "
                                   "some (dask worker ADDRESS)") from None
            yield client
        return
    # one thread per worker: torch in each worker uses one core (the nanny sets OMP_NUM_THREADS=1 too). No
    # dashboard, and the scheduler's HTTP routes on a free port (not 8787, which another cluster may hold).
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, host="127.0.0.1",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


# ------------------------------------------------------------------------------------------- in each worker
_CACHE: dict[str, Any] = {}  # per worker process: token -> object (a Predictor); one at a time, so one model


def worker_cached(token: str, make: Callable[[], Any]) -> Any:
    """This worker's object for ``token`` (a Predictor), made by ``make()`` the first time a task asks for it."""
    made = _CACHE.get(token)
    if made is None:
        _CACHE.clear()
        made = _CACHE[token] = make()
    return made


def error_line(err: BaseException) -> str:
    """One line for an error: a LeanSegError's message, else the exception's type and first line."""
    if isinstance(err, LeanSegError):
        return str(err)
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (Linux reports ru_maxrss in KB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def where() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


# ------------------------------------------------------------------------------------------- in the client
def portable(model):
    """The model as every worker can load it: absolute checkpoint paths, zoo names as they are."""
    if isinstance(model, list | tuple) and all(isinstance(m, str | os.PathLike) for m in model):
        return [portable(m) for m in model]
    if not isinstance(model, str | os.PathLike):
        raise LeanSegError("on Dask workers the model is loaded by each worker: give a checkpoint path or zoo name, "
                           "not a loaded model")
    return str(Path(model).absolute()) if Path(model).exists() else str(model)


def prepare(client, model, options: dict, load: Callable) -> tuple[str, Any]:
    """(token, portable model), with ``load(token, model, options)`` run on every worker now (it loads the
    model), so that a checkpoint that does not load is one error, not one per case."""
    from dask.base import tokenize

    model = portable(model)
    token = tokenize(model, sorted(options.items(), key=lambda kv: kv[0]))
    try:
        client.run(load, token, model, options)
    except LeanSegError:
        raise
    except Exception as err:
        raise LeanSegError(f"the Dask workers could not load the model ({error_line(err)})") from None
    return token, model


def until_done(client, pending: set, finish: Callable[[Any], None], abandon: Callable[[set], Any]) -> None:
    """Call ``finish`` on each future as it ends; after ``_WORKER_WAIT`` s without a worker, ``abandon`` the rest."""
    from distributed import wait

    alone_since = None
    while pending:
        try:
            done = wait(pending, timeout=_POLL, return_when="FIRST_COMPLETED").done
        except TimeoutError:  # distributed's wait raises when nothing ended in time
            done = set()
        pending.difference_update(done)
        for future in done:
            finish(future)
        if done or client.scheduler_info().get("workers"):
            alone_since = None
        elif alone_since is None:
            alone_since = time.monotonic()
        elif time.monotonic() - alone_since > _WORKER_WAIT:
            client.cancel(list(pending))
            abandon(pending)
            pending.clear()


