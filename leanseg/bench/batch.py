"""``leanseg bench batch``: cases per second for one ``leanseg predict`` process per case, one process for the
folder, and a local Dask cluster, on real MSD hippocampus cases with the zoo's ``hippocampus`` model.

Every row runs the CLI as a user would, in fresh processes, and times it from start to exit (start-up, model loading
and writing included). The cases are linked (not copied) from the shared data into a temporary input folder.
Peak memory is ``ru_maxrss``: of each per-case process (the largest is shown), of the folder process, and of each
Dask worker (as the workers report it; the client process is not counted).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from leanseg import env
from leanseg.errors import LeanSegError


@dataclass
class Row:
    mode: str
    seconds: float
    cases: int
    peaks_mb: list[float] = field(default_factory=list)

    def line(self) -> str:
        peaks = ", ".join(f"{mb:.0f}" for mb in self.peaks_mb)
        return (f"{self.mode:<34} {self.seconds:8.1f} {self.cases / self.seconds:9.3f} {self.seconds / self.cases:8.2f}"
                f"   {peaks}")


def hippocampus_cases(n: int) -> list[Path]:
    root = (env.shared_data() or Path(__file__).resolve().parents[2].parent / "shared" / "data")
    images = root / "nifti" / "msd_hippocampus" / "imagesTr"
    files = sorted(p for p in images.glob("*.nii.gz") if not p.name.startswith("."))
    if not files:
        raise LeanSegError(f"{images}: no MSD hippocampus cases (set LEANSEG_SHARED_DATA to the shared data folder)")
    return files[:n]


def _cli() -> list[str]:
    return [sys.executable, "-m", "leanseg"]


def _run(args: list[str], environ: dict) -> tuple[float, str, float]:
    """(seconds, stderr, peak RSS MB of the process) of one CLI run; an error is raised with its last line."""
    start = time.perf_counter()
    proc = subprocess.Popen(_cli() + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environ)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise LeanSegError(f"bench batch: leanseg {' '.join(args[:2])} ... failed: {err.strip().splitlines()[-1:]}")
    return seconds, err, usage.ru_maxrss / 1024


def _peaks(stderr: str) -> list[float]:
    line = next((x for x in stderr.splitlines() if x.startswith("leanseg: peak memory:")), "")
    return [float(mb) for mb in re.findall(r"(\d+) MB", line)]


def run(n: int = 20, workers: int = 2, model: str = "hippocampus", workdir: str | None = None,
        rows: tuple[str, ...] = ("per-case", "folder", "dask")) -> list[Row]:
    from leanseg.bench import check_counts, check_workdir

    check_counts(cases=n, workers=workers)
    check_workdir(workdir)
    files = hippocampus_cases(n)
    base = Path(tempfile.mkdtemp(prefix="leanseg-bench-batch-", dir=workdir))
    from leanseg import env

    environ = env.child_environ(PYTHONWARNINGS="ignore")
    results = []
    try:
        src = base / "in"
        src.mkdir()
        for f in files:
            (src / f.name).symlink_to(f)
        if "per-case" in rows:
            out = base / "per_case"
            out.mkdir()
            start, peak = time.perf_counter(), 0.0
            for f in files:
                _, _, mb = _run(["predict", str(src / f.name), "-m", model, "-o", str(out / f.name), "--no-progress"],
                                environ)
                peak = max(peak, mb)
            results.append(Row("one process per case", time.perf_counter() - start, len(files), [peak]))
            print(results[-1].line(), flush=True)
        if "folder" in rows:
            seconds, err, mb = _run(["predict", str(src), "-m", model, "-o", str(base / "folder"), "--no-progress"],
                                    environ)
            results.append(Row("one process for the folder", seconds, len(files), [mb]))
            print(results[-1].line(), flush=True)
        if "dask" in rows:
            seconds, err, _ = _run(["predict", str(src), "-m", model, "-o", str(base / "dask"), "--workers",
                                    str(workers), "--no-progress"], environ)
            results.append(Row(f"{workers} Dask workers (LocalCluster)", seconds, len(files), _peaks(err)))
            print(results[-1].line(), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return results


def header(n: int, model: str) -> str:
    cpu = _cpu_model()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"leanseg bench batch: {n} MSD hippocampus cases (imagesTr, sorted), -m {model}; {cpu}, "
            f"{os.cpu_count()} cores, load average {load} at start; Python {platform.python_version()}\n"
            f"{'mode':<34} {'wall s':>8} {'cases/s':>9} {'s/case':>8}   peak MB per process (per worker)")


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"Model name:\s*(.+)", out)
    return match.group(1).strip() if match else "unknown CPU"
