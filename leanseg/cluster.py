"""Cases, and the inline slabs of one SEG-Y survey, on a Dask cluster (``pip install 'leanseg[distributed]'``).

leanseg has no scheduler of its own: ``scheduler`` is the address of a running Dask scheduler (``dask scheduler``
and ``dask worker`` on the machines, or dask-jobqueue on a batch cluster), ``workers`` starts a ``LocalCluster`` of
that many single-threaded worker processes. The client only schedules and reports: each worker loads the model once
(a ``Predictor`` cached in the worker process, keyed by a token of the model and options), reads its inputs and
writes its outputs itself, so the inputs and the output folder must be on a file system every worker sees.

A SEG-Y survey goes slab by slab: the client bins the headers (to count the inlines), writes the output's text and
binary headers into a partial file pre-sized to the whole output, and sends each slab (its inlines plus a halo) to a
worker, which predicts it as the single-process stream does (``leanseg.stitch.SlabStitcher``) and writes its traces at
their byte offsets. A journal beside the partial file lists the slabs written, so a killed run resumes by slab; the
partial file is renamed onto the output when every slab is in.
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

import numpy as np

from leanseg.batch import Case, error_line, peak_rss_mb, predict_case
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
_PREDICTORS: dict[str, Any] = {}  # token -> Predictor; one at a time, so a worker holds one model


def worker_predictor(token: str, model, options: dict):
    """This worker's Predictor for ``token``, made the first time a task asks for it."""
    predictor = _PREDICTORS.get(token)
    if predictor is None:
        from leanseg.prediction import Predictor

        _PREDICTORS.clear()
        predictor = _PREDICTORS[token] = Predictor(model, **options)
    return predictor


def _where() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def _load(token: str, model, options: dict) -> str:
    worker_predictor(token, model, options)
    return _where()


def _case_task(token: str, model, options: dict, case: Case, output: Path) -> dict:
    start = time.perf_counter()
    error = None
    try:
        predict_case(worker_predictor(token, model, options), case, output)
    except Exception as err:  # reported by the client as this case's one line; the worker goes on
        error = error_line(err)
    return {"seconds": time.perf_counter() - start, "error": error, "worker": _where(), "peak_mb": peak_rss_mb()}


# ------------------------------------------------------------------------------------------- in the client
def _portable(model):
    """The model as every worker can load it: absolute checkpoint paths, zoo names as they are."""
    if isinstance(model, list | tuple) and all(isinstance(m, str | os.PathLike) for m in model):
        return [_portable(m) for m in model]
    if not isinstance(model, str | os.PathLike):
        raise LeanSegError("on Dask workers the model is loaded by each worker: give a checkpoint path or zoo name, "
                           "not a loaded model")
    return str(Path(model).absolute()) if Path(model).exists() else str(model)


def _prepare(client, model, options: dict) -> tuple[str, Any]:
    """(token, portable model), with the model loaded on every worker now, so that a checkpoint that does not
    load is one error, not one per case."""
    from dask.base import tokenize

    model = _portable(model)
    token = tokenize(model, sorted(options.items(), key=lambda kv: kv[0]))
    try:
        client.run(_load, token, model, options)
    except LeanSegError:
        raise
    except Exception as err:
        raise LeanSegError(f"the Dask workers could not load the model ({error_line(err)})") from None
    return token, model


def run_cases(client, model, options: dict, todo: list[tuple[Case, Path]],
              report: Callable[[Case, float, str | None], None]) -> dict[str, float]:
    """Predict ``todo`` ((case, label map) pairs) on the cluster; ``report`` each case as it ends. Returns the peak
    resident memory (MB) of each worker that predicted. A case whose workers died (Dask retries it on others first)
    fails with one line; if the cluster is left without a worker, the cases not done fail with one line each."""
    token, model = _prepare(client, model, options)
    futures = {}
    for case, output in todo:  # absolute paths: a worker's working folder is its own
        case = Case(case.name, tuple(p.absolute() for p in case.inputs), case.kind, case.problem)
        future = client.submit(_case_task, token, model, options, case, output.absolute(),
                               key=f"leanseg-{case.name}-{token[:8]}-{os.urandom(4).hex()}", retries=0)
        futures[future] = case
    peaks: dict[str, float] = {}

    def finish(future) -> None:
        case = futures[future]
        try:
            result = future.result()
        except Exception as err:  # KilledWorker: the workers that ran it died
            report(case, 0.0, f"the Dask worker(s) predicting it died ({error_line(err)[:200]})")
            return
        peaks[result["worker"]] = max(peaks.get(result["worker"], 0.0), result["peak_mb"])
        report(case, result["seconds"], result["error"])

    def abandon(left: set) -> None:
        for future in left:
            report(futures[future], 0.0, "not predicted: no Dask worker left")

    _until_done(client, set(futures), finish, abandon)
    return peaks


def _until_done(client, pending: set, finish: Callable[[Any], None], abandon: Callable[[set], Any]) -> None:
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


# ------------------------------------------------------------------------------------------- a SEG-Y survey
_READERS: dict[str, Any] = {}  # per worker: path -> (SegyReader, normalizer); one survey at a time
_STITCHERS: dict[str, Any] = {}  # per worker: token -> SlabStitcher (slabs of one shape share the window weights)


def _segy_source(path: str, predictor):
    entry = _READERS.get(path)
    if entry is None:
        from leanseg.io import SegyReader
        from leanseg.prediction import segy_normalizer

        for reader, _ in _READERS.values():
            reader.__exit__(None, None, None)
        _READERS.clear()
        reader = SegyReader(path)
        entry = _READERS[path] = (reader, segy_normalizer(reader, predictor.meta))
    return entry


def _slab_task(token: str, model, options: dict, path: str, partial: str, step: tuple[int, int, int, int]) -> dict:
    """Predict inlines ``start:stop`` of the survey (reading ``lo:hi``) and write their traces into ``partial``."""
    import torch

    from leanseg.io import SegyWriter
    from leanseg.prediction import window_for
    from leanseg.stitch import SlabStitcher

    start_time = time.perf_counter()
    predictor = worker_predictor(token, model, options)
    reader, norm = _segy_source(path, predictor)
    meta = predictor.meta
    start, stop, lo, hi = step
    stitch = _STITCHERS.get(token)
    if stitch is None:  # as the single-process stream makes it
        _STITCHERS.clear()
        stitch = _STITCHERS[token] = SlabStitcher.for_model(predictor.net, window_for(meta, predictor.window, 3), 3,
                                                            **predictor.options)
    x = reader.read(lo, hi)[None]
    x = x if norm is None else np.asarray(norm(x), dtype=np.float32)  # None: the checkpoint normalises nothing
    probs = stitch(torch.from_numpy(np.ascontiguousarray(x))[None], slice(start - lo, stop - lo))[0]
    labels = meta.label_manager.decode(probs)
    labels[~reader.geometry.live[start:stop]] = 0
    with SegyWriter(partial, reader.geometry, create=False) as writer:
        writer.write(start, labels)
    return {"seconds": time.perf_counter() - start_time, "worker": _where(), "peak_mb": peak_rss_mb()}


def predict_segy(client, model, options: dict, path: Path, output: Path, slab_halo: tuple, window=None,
                 progress: bool = True) -> dict[str, float]:
    """Predict the SEG-Y cube ``path`` slab by slab on the cluster's workers into ``output`` (.sgy); equal, trace
    for trace and header for header, to ``leanseg.predict``'s stream. Returns each worker's peak memory (MB)."""
    from tqdm.auto import tqdm

    from leanseg.io import SegyReader, SegyWriter, check_output, kind_of
    from leanseg.stitch import plan_slabs

    path, output = Path(path).absolute(), Path(output).absolute()
    if kind_of(output) != "segy":
        raise LeanSegError(f"{output}: over Dask workers a SEG-Y prediction is written as SEG-Y (.sgy)")
    check_output(output, [path])
    options = {**options, "window": window, "progress": False}
    token, model = _prepare(client, model, options)
    with SegyReader(path) as reader:
        geometry = reader.geometry
        steps = plan_slabs(reader.shape[0], _first_window(client, token, model, options), *slab_halo)
    partial = output.parent / f".{output.name}.slabs-partial"
    journal = output.parent / f".{output.name}.slabs-done"
    stamp = f"{path} {path.stat().st_size} {path.stat().st_mtime_ns} {token}\n"
    done: set[int] = set()
    if partial.is_file() and journal.is_file() and journal.read_text().startswith(stamp):
        done = {int(line) for line in journal.read_text().splitlines()[1:] if line.strip().isdigit()}
    else:  # a fresh output: headers, then the file extended to its full size so that workers write in place
        with SegyWriter(partial, geometry) as writer:
            size = writer.size
        with open(partial, "r+b") as f:
            f.truncate(size)
        journal.write_text(stamp)
    todo = [step for step in steps if step[0] not in done]
    futures = {client.submit(_slab_task, token, model, options, str(path), str(partial), step,
                             key=f"leanseg-slab-{step[0]}-{token[:8]}-{os.urandom(4).hex()}", retries=0): step
               for step in todo}
    peaks: dict[str, float] = {}
    failed: list[int] = []
    errors: list[str] = []
    bar = tqdm(total=len(steps), initial=len(steps) - len(todo), unit="slab", desc="slabs", disable=not progress)

    def finish(future) -> None:
        step = futures[future]
        try:
            result = future.result()
        except Exception as err:  # the worker's error, or KilledWorker
            failed.append(step[0])
            errors.append(error_line(err)[:200])
            return
        peaks[result["worker"]] = max(peaks.get(result["worker"], 0.0), result["peak_mb"])
        with open(journal, "a") as f:
            f.write(f"{step[0]}\n")
        bar.update(1)

    try:
        _until_done(client, set(futures), finish, lambda left: failed.extend(futures[f][0] for f in left))
    finally:
        bar.close()
    if failed:
        inlines = ", ".join(f"{geometry.ilines[s]}" for s in sorted(failed)[:5])
        why = f" ({errors[0]})" if errors else " (no Dask worker left)"
        raise LeanSegError(f"{path}: {len(failed)} slab(s) not predicted, starting at inline(s) {inlines}{why}; run "
                           "the same command again to predict only those")
    os.replace(partial, output)
    journal.unlink(missing_ok=True)
    return peaks


def _first_window(client, token: str, model, options: dict) -> int:
    """The window's inline size, as a worker's Predictor resolves it (the checkpoint's unless asked)."""
    sizes = client.submit(_window_task, token, model, options, pure=False).result()
    return int(sizes[0])


def _window_task(token: str, model, options: dict) -> tuple[int, ...]:
    from leanseg.prediction import window_for

    predictor = worker_predictor(token, model, options)
    return window_for(predictor.meta, predictor.window, 3)
