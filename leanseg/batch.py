"""``leanseg.predict_folder``: every case of a folder through one model loaded once, written to another folder.

A folder holds one kind of case: NIfTI files (one case each, or nnU-Net channel files ``CASE_0000.nii.gz``,
``CASE_0001.nii.gz``, ... grouped by case), case folders (channel files found by the checkpoint's channel names, as
``leanseg.predict`` finds them), DICOM series folders, SEG-Y cubes or 2D images. Case ``c`` is written to
``OUT/c.nii.gz`` (``.sgy`` for SEG-Y, ``.png`` for images). Outputs are atomic, so one that exists is whole: a case
whose outputs all exist is skipped, and a killed run resumes where it stopped.

The cases run in this process, the next one read in a thread while the network runs; or on a Dask cluster
(``leanseg.cluster``). ``num_parts``/``part_id`` keep every ``num_parts``-th case of the sorted list, so N job-array
tasks write what one run writes.
"""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanseg.cluster import error_line, peak_rss_mb, prepare, until_done, where, worker_cached
from leanseg.errors import LeanSegError, LeanSegWarning
from leanseg.io import atomic_path, full_suffix, is_dicom_folder, kind_of, stem

# the suffix of a case's label map, by the kind of case
_LABEL_SUFFIX = {"nifti": ".nii.gz", "folder": ".nii.gz", "dicom": ".nii.gz", "segy": ".sgy", "image": ".png"}
_KIND_NAMES = {"nifti": "NIfTI files", "folder": "case folders", "dicom": "DICOM series folders",
               "segy": "SEG-Y files", "image": "images"}
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<index>\d{4})$")  # nnU-Net: CASE_XXXX, XXXX the channel


@dataclass(frozen=True)
class Case:
    """One case of a folder: its name (the output's stem) and the files or folder ``leanseg.predict`` reads."""

    name: str
    inputs: tuple[Path, ...]
    kind: str  # a key of _LABEL_SUFFIX
    problem: str | None = None  # found when the folder was read (a missing channel file): the case fails with it


def find_cases(folder: str | os.PathLike) -> list[Case]:
    """The cases of ``folder``, sorted by name. Hidden entries are passed over, and files that hold no case
    (``dataset.json``, a README) with a note; a folder holding two kinds of case, or none, is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LeanSegError(f"{folder}: no such folder")
    by_kind: dict[str, list[Path]] = {}
    ignored = []
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if path.is_dir():
            kind = "dicom" if is_dicom_folder(path) else "folder"
        else:
            try:
                kind = kind_of(path)
            except LeanSegError:
                kind = "other"
        if kind not in _KIND_NAMES:
            ignored.append(path.name)
            continue
        by_kind.setdefault(kind, []).append(path)
    if not by_kind:
        raise LeanSegError(f"{folder}: no cases in the folder (NIfTI, SEG-Y or image files, case or DICOM folders)")
    if len(by_kind) > 1:
        kinds = [f"{len(paths)} {_KIND_NAMES[kind]}" for kind, paths in by_kind.items()]
        raise LeanSegError(f"{folder}: holds {' and '.join(kinds)}; give a folder with one kind of case")
    if ignored:
        warnings.warn(f"{folder}: {len(ignored)} file(s) that are no case passed over ({', '.join(ignored[:3])}"
                      f"{', ...' if len(ignored) > 3 else ''})", LeanSegWarning, stacklevel=2)
    ((kind, paths),) = by_kind.items()
    if kind == "nifti":
        cases = _nifti_cases(paths)
    else:
        cases = [Case(stem(p) if p.is_file() else p.name, (p,), kind) for p in paths]
    names = [c.name for c in cases]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LeanSegError(f"{folder}: two cases would be written as {twice[0]!r}; rename one")
    return sorted(cases, key=lambda c: c.name)


def _nifti_cases(paths: list[Path]) -> list[Case]:
    """One case per file, or, when every name is nnU-Net's CASE_XXXX, one case per CASE with its channels in order."""
    matches = [_CHANNEL_FILE.match(stem(p)) for p in paths]
    if not all(matches):
        return [Case(stem(p), (p,), "nifti") for p in paths]
    groups: dict[str, dict[int, Path]] = {}
    for path, match in zip(paths, matches, strict=True):
        assert match is not None  # all matched
        groups.setdefault(match["case"], {})[int(match["index"])] = path
    cases = []
    for name, channels in groups.items():
        files = tuple(channels[i] for i in sorted(channels))
        gaps = sorted(set(range(max(channels) + 1)) - set(channels))
        problem = None
        if gaps:  # nnU-Net numbers the channels of a case from _0000 without gaps
            problem = (f"{files[0].parent / name}_{gaps[0]:04d}{full_suffix(files[0])}: channel file missing "
                       f"(case {name} has {', '.join(f'_{i:04d}' for i in sorted(channels))})")
        cases.append(Case(name, files, "nifti", problem))
    return cases


def shard(cases: Sequence[Case], num_parts: int = 1, part_id: int = 0) -> list[Case]:
    """Part ``part_id`` of ``num_parts``: every ``num_parts``-th case of the sorted list from ``part_id`` on, so the
    parts are disjoint, cover every case and differ in size by at most one."""
    if num_parts < 1:
        raise LeanSegError(f"num_parts must be at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise LeanSegError(f"part_id must be 0 to {num_parts - 1} for {num_parts} part(s), got {part_id}")
    return list(sorted(cases, key=lambda c: c.name))[part_id::num_parts]


def check_folders(folder: Path, output: Path) -> None:
    """Refuse an output folder that is the input folder or inside it (a re-run would take the outputs for cases)
    and an output that is a file; create the output folder."""
    inside, root = output.resolve(), folder.resolve()
    if inside == root or root in inside.parents:
        raise LeanSegError(f"{output}: the output folder is inside the input folder {folder}; choose one outside it")
    if output.exists() and not output.is_dir():
        raise LeanSegError(f"{output}: exists and is not a folder; give a folder for a folder's predictions")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LeanSegError(f"{output}: cannot create the output folder ({err.strerror or err})") from None


@dataclass
class FolderResult:
    """What ``predict_folder`` did: cases predicted (seconds each), skipped as already written, and failed (one
    line each, also in ``failures``, a file in the output folder); ``peak_mb``: peak resident memory of each process
    that predicted (this one, or each Dask worker), in MB."""

    output: Path
    predicted: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    peak_mb: dict[str, float] = field(default_factory=dict)
    failures: Path | None = None

    def summary(self) -> str:
        done = len(self.predicted)
        rate = f" ({self.seconds / done:.2f} s a case, {done / self.seconds:.2f} cases/s)" if done and self.seconds \
            else ""
        total = done + len(self.skipped) + len(self.failed)
        return (f"{total} case(s) in {self.seconds:.1f} s: {done} predicted{rate}, {len(self.skipped)} already "
                f"written, {len(self.failed)} failed")


# options of leanseg.predict that predict_folder passes on to every case
PredictOptions = dict[str, Any]


def predict_folder(folder: str | os.PathLike, model=None, *, output: str | os.PathLike, num_parts: int = 1,
                   part_id: int = 0, scheduler: str | None = None, workers: int | None = None,
                   progress: bool = True, **options) -> FolderResult:
    """Predict every case of ``folder`` (see ``find_cases``) and write ``output/<case>.<ext>``.

    Args:
        folder: the input folder; output: the output folder (created; not inside ``folder``).
        model: as ``leanseg.predict``'s (a checkpoint path, zoo name or list of them; a ``(model, meta)`` pair
            in this process only). None: ``leanseg.predict``'s choice for the first case.
        num_parts, part_id: predict only part ``part_id`` of ``num_parts`` (``shard``), for job arrays.
        scheduler: the address of a running Dask scheduler (``tcp://host:8786``) whose workers predict the cases;
            workers: start a local Dask cluster of this many worker processes instead (``leanseg.cluster``).
        progress: a bar over the cases (the per-case sliding-window bars are off).
        options: the other arguments of ``leanseg.predict`` (window, overlap, tta, device, probabilities, ...).

    A case that fails is reported in one line and the others go on; ``result.failed`` names them, as does the
    failures file. Cases whose outputs all exist are skipped.
    """
    from leanseg.inference import check_options
    from leanseg.io import as_path

    folder, out = as_path(folder, "folder"), as_path(output, "output")
    unknown = set(options) - _PREDICT_OPTIONS
    if unknown:
        raise LeanSegError(f"predict_folder got unknown option(s) {', '.join(sorted(unknown))}")
    check_options(**{k: options[k] for k in ("overlap", "batch_size", "slab", "halo") if k in options})
    if scheduler is not None and workers is not None:
        raise LeanSegError("give scheduler (an existing Dask cluster) or workers (a local one), not both")
    if workers is not None and workers < 1:
        raise LeanSegError(f"workers must be at least 1, got {workers}")
    if not folder.is_dir():
        raise LeanSegError(f"{folder}: no such folder")
    check_folders(folder, out)
    cases = shard(find_cases(folder), num_parts, part_id)
    if model is None:
        from leanseg.pretrained import default_model

        model, why = default_model(list(cases[0].inputs)) if cases else (None, "")
        print(f"leanseg: {why}", file=sys.stderr)
    options = {**options, "progress": False}
    todo, result = [], FolderResult(out)
    for case in cases:
        files = case_outputs(case, out, options)
        if all(p.exists() for p in files):
            result.skipped.append(case.name)
        else:
            todo.append((case, files[0]))
    failures = out / ("failures.tsv" if num_parts == 1 else f"failures-part{part_id}-of{num_parts}.tsv")
    start = time.perf_counter()
    with ExitStack() as stack:
        client = None
        if todo and (scheduler is not None or workers is not None):  # before the bar: a refusal is one line
            from leanseg.cluster import connect

            client = stack.enter_context(connect(scheduler, workers))
        bar = stack.enter_context(_Bar(len(todo), progress))

        def report(case: Case, seconds: float, error: str | None) -> None:
            if error is None:
                result.predicted[case.name] = seconds
            else:
                result.failed[case.name] = error
                bar.write(f"leanseg: {case.name}: failed: {error}")
            bar.step(f"{case.name} {seconds:.1f} s")

        if client is not None:
            result.peak_mb = run_cases(client, model, options, todo, report)
        elif todo:
            result.peak_mb = _run_here(model, options, todo, report)
    result.seconds = time.perf_counter() - start
    if result.failed:
        with atomic_path(failures) as tmp:
            tmp.write_text("".join(f"{name}\t{error}\n" for name, error in sorted(result.failed.items())))
        result.failures = failures
    else:
        failures.unlink(missing_ok=True)  # from an earlier run whose failed cases are now written
    return result


_PREDICT_OPTIONS = {"window", "overlap", "tta", "device", "amp", "probabilities", "preview", "batch_size", "slab",
                    "halo", "postprocess", "uncertainty", "crop", "precision", "spacing"}


def case_outputs(case: Case, out: Path, options: PredictOptions) -> list[Path]:
    """The files ``case`` writes in the output folder (label map first), without loading a model: the skip test."""
    label = out / f"{case.name}{_LABEL_SUFFIX[case.kind]}"
    arrays = ".npy" if case.kind in ("segy", "image") else full_suffix(label)
    files = [label]
    for flag, tag, suffix in (("probabilities", "probs", arrays), ("preview", "preview", ".png"),
                              ("uncertainty", "uncertainty", arrays)):
        if options.get(flag):
            files.append(out / f"{case.name}_{tag}{suffix}")
    return files


def predict_case(predictor, case: Case, output: Path, volume=None) -> None:
    """One case through a ``leanseg.prediction.Predictor``; a problem found when the folder was read is its error."""
    if case.problem is not None:
        raise LeanSegError(case.problem)
    predictor(list(case.inputs), output, volume)


def _run_here(model, options: PredictOptions, todo: list[tuple[Case, Path]],
              report: Callable[[Case, float, str | None], None]) -> dict[str, float]:
    """The cases in this process, with the model loaded once; case i + 1 is read while case i is predicted."""
    from leanseg.prediction import Predictor

    predictor = Predictor(model, **options)

    def read(case: Case):
        if case.problem is not None or case.kind == "segy":  # SEG-Y streams: it reads as it predicts
            return None
        return predictor.read(case.inputs)

    with ThreadPoolExecutor(1, thread_name_prefix="leanseg-read") as pool:
        ahead: Future = pool.submit(read, todo[0][0])
        for i, (case, output) in enumerate(todo):
            start = time.perf_counter()
            current = ahead
            if i + 1 < len(todo):
                ahead = pool.submit(read, todo[i + 1][0])
            try:
                predict_case(predictor, case, output, current.result())
            except Exception as err:  # any error ends this case only; KeyboardInterrupt & co. end the run
                report(case, time.perf_counter() - start, error_line(err))
            else:
                report(case, time.perf_counter() - start, None)
    return {f"pid {os.getpid()}": peak_rss_mb()}


# ------------------------------------------------------------------------------------------- on Dask workers
def _predictor(token: str, model, options: PredictOptions):
    from leanseg.prediction import Predictor

    return worker_cached(token, lambda: Predictor(model, **options))


def _load(token: str, model, options: dict) -> str:
    _predictor(token, model, options)
    return where()


def _case_task(token: str, model, options: dict, case: Case, output: Path) -> dict:
    start = time.perf_counter()
    error = None
    try:
        predict_case(_predictor(token, model, options), case, output)
    except Exception as err:  # reported by the client as this case's one line; the worker goes on
        error = error_line(err)
    return {"seconds": time.perf_counter() - start, "error": error, "worker": where(), "peak_mb": peak_rss_mb()}


def run_cases(client, model, options: dict, todo: list[tuple[Case, Path]],
              report: Callable[[Case, float, str | None], None]) -> dict[str, float]:
    """Predict ``todo`` ((case, label map) pairs) on the cluster; ``report`` each case as it ends. Returns the peak
    resident memory (MB) of each worker that predicted. A case whose workers died (Dask retries it on others first)
    fails with one line; if the cluster is left without a worker, the cases not done fail with one line each."""
    token, model = prepare(client, model, options, _load)
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

    until_done(client, set(futures), finish, abandon)
    return peaks



class _Bar:
    """A bar over the cases (tqdm on stderr), or nothing; ``write`` prints a line either way."""

    def __init__(self, total: int, show: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="case", desc="cases", disable=not show, file=sys.stderr)

    def step(self, note: str) -> None:
        self.bar.set_postfix_str(note, refresh=False)
        self.bar.update(1)

    def write(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
