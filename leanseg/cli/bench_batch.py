"""``leanseg bench batch``: cases/s of one process per case, one process for a folder, and Dask workers."""

from __future__ import annotations

import typer


def bench_batch(
    cases: int = typer.Option(20, help="MSD hippocampus cases (the first of imagesTr, sorted) from the shared data"),
    workers: int = typer.Option(2, help="Dask workers of the LocalCluster row (one thread each)"),
    model: str = typer.Option("hippocampus", "-m", "--model", help="checkpoint or zoo name"),
    rows: str = typer.Option("per-case,folder,dask", help="rows to run: per-case, folder, dask"),
    workdir: str | None = typer.Option(None, help="folder for the temporary input links and outputs"),
):
    """Wall time, cases/s and peak memory per process of `leanseg predict` over many cases, three ways."""
    from leanseg.bench.batch import header, run
    from leanseg.errors import LeanSegError
    from leanseg.options import at_least

    at_least(cases, 1, "--cases")
    at_least(workers, 1, "--workers")
    chosen = tuple(r.strip() for r in rows.split(",") if r.strip())
    unknown = set(chosen) - {"per-case", "folder", "dask"}
    if unknown:
        raise LeanSegError(f"--rows: unknown row(s) {', '.join(sorted(unknown))}; choose per-case, folder, dask")
    typer.echo(header(cases, model))
    run(cases, workers, model, workdir, chosen)
