"""Safe outputs: every file is written to a temporary name in its target folder and renamed when complete.

A crash or an error while writing leaves no partial file under the requested name; an input is never overwritten.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from leanseg.errors import LeanSegError

# Suffixes that name a format; a temporary file keeps them so that nibabel & co. pick the same writer.
_COMPOUND = (".nii.gz", ".tar.gz")


def full_suffix(path: str | os.PathLike) -> str:
    """'.nii.gz' for 'a.nii.gz', '.sgy' for 'b.sgy' (lower case)."""
    name = Path(path).name.lower()
    for suffix in _COMPOUND:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def stem(path: str | os.PathLike) -> str:
    """The file name without its (compound) suffix."""
    name = Path(path).name
    return name[: len(name) - len(full_suffix(path))] if full_suffix(path) else name


def as_path(value, what: str) -> Path:
    """``value`` as a Path when it is one (a str or os.PathLike), else a one-line error naming the argument."""
    if isinstance(value, bool) or not isinstance(value, str | os.PathLike) or not str(value):
        raise LeanSegError(f"{what} must be a file or folder path, got {type(value).__name__} {value!r}")
    return Path(value)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _files_of(item: Path, limit: int = 100_000) -> Iterator[Path]:
    """The files an input stands for: itself, or every file under a folder (a DICOM series, a case folder)."""
    if not item.is_dir():
        yield item
        return
    for count, found in enumerate(item.rglob("*")):
        if count >= limit:
            return
        if found.is_file():
            yield found


def check_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> Path:
    """Refuse an output that is one of the inputs (a file, a file of an input folder, the same file through a
    symlink or a hard link), that lies inside an input folder (a written file would join a DICOM series or a case
    on the next read), or that cannot be created; returns the output as a Path.

    The probe creates and removes an empty file in the target folder, which also catches read-only file systems
    where ``os.access`` answers yes (it does for root).
    """
    out = Path(output)
    for item in map(Path, inputs):
        if item.is_dir() and _inside(out.parent, item):
            raise LeanSegError(f"{out}: output path is inside the input folder {item}; write it elsewhere (-o)")
        for source in _files_of(item):
            same = out.absolute() == source.absolute() or out.resolve() == source.resolve() or (
                out.exists() and source.exists() and os.path.samefile(out, source))
            if same:
                raise LeanSegError(f"{out}: output path is the input file {source}; choose another output (-o)")
    if out.is_dir():
        raise LeanSegError(f"{out}: output path is a folder; give a file name (-o)")
    probe = out.parent / f".{out.name}.probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise LeanSegError(f"{out}: cannot write to the output folder {out.parent} ({err.strerror or err})") from None
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed runs left for ``path`` (their writer's PID is gone); returns them."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{stem(path)}.partial-*"):
        pid = tmp.name[len(f".{stem(path)}.partial-"):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _default_mode(path: Path) -> None:
    """Give a finished file the mode a plain ``open()`` would: 0666 less the umask. Some writers (safetensors) create
    their files 0600, which colleagues on a shared server cannot read."""
    if path.is_file() and not path.is_symlink():
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(path, 0o666 & ~mask)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); rename it onto ``path`` only if the block succeeds.

    The temporary name holds this process's PID, so a run killed mid-write (SIGKILL, power loss) leaves a file
    that the next write of the same output recognises as stale and removes.
    """
    path = Path(path)
    remove_stale_partials(path)
    tmp = path.parent / f".{stem(path)}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}{full_suffix(path)}"
    try:
        yield tmp
        _default_mode(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise LeanSegError(f"{path}: cannot write ({err.strerror or err})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
