"""Post-stack SEG-Y cubes via segyio, read lazily and written back with the input's headers.

A cube is binned by the inline/crossline numbers in its trace headers (bytes 189/193), so inline- or
crossline-sorted files, non-unit steps and irregular surveys with missing traces all become one
``(inline, crossline, sample)`` grid with a mask of live traces. Nothing reads the whole cube: ``SegyReader.read``
returns a slab of inlines and ``SegyWriter.write`` writes one, so a cube larger than RAM streams through.

segyio's own geometry (``segyio.open`` without ``ignore_geometry``) lacks two things we need: it fails on
surveys with missing traces, and ``segyio.tools.cube`` loads the whole file. Hence the header binning here.
"""

from __future__ import annotations

import itertools
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import segyio

from leanseg.errors import LeanSegError

SEGY_SUFFIXES = (".sgy", ".segy")
_FORMATS = {1, 2, 3, 5, 6, 8, 9, 10, 11, 12, 15, 16}  # sample format codes of SEG-Y rev 0..2
_TEXT, _BIN, _TRACE_HEADER = 3200, 400, 240
_INLINE_BYTE = 188  # 0-based offsets in a trace header: inline number (bytes 189-192), crossline next (193-196)
_MAP_BYTES = 64 << 20  # file bytes mapped at a time where header words are read through numpy
# bytes per sample of each SEG-Y format code
_SAMPLE_BYTES = {1: 4, 2: 4, 3: 2, 5: 4, 6: 8, 8: 1, 9: 8, 10: 4, 11: 2, 12: 8, 15: 3, 16: 1}


def _endian(path: Path) -> str:
    """'big' or 'little', from the sample format code in the binary header (bytes 3225-3226)."""
    with open(path, "rb") as f:
        f.seek(_TEXT + 24)
        raw = f.read(2)
    if len(raw) < 2:
        raise LeanSegError(f"{path}: not a SEG-Y file (shorter than the 3600-byte text and binary headers)")
    big, little = struct.unpack(">h", raw)[0], struct.unpack("<h", raw)[0]
    if big in _FORMATS:
        return "big"
    if little in _FORMATS:
        return "little"
    raise LeanSegError(f"{path}: not a SEG-Y file (sample format code {big} in the binary header is unknown)")


@dataclass
class SegyGeometry:
    """The grid of a binned cube and the file whose headers a result is written with."""

    path: Path
    endian: str
    ilines: np.ndarray  # sorted inline numbers, (I,)
    xlines: np.ndarray  # sorted crossline numbers, (X,)
    samples: np.ndarray  # sample times/depths from segyio, (S,)
    trace_index: np.ndarray = field(repr=False)  # (I, X) int64: trace number in the file, -1 where none

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.ilines), len(self.xlines), len(self.samples))

    @property
    def live(self) -> np.ndarray:
        """(I, X) bool: where the file has a trace."""
        return self.trace_index >= 0

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Inline step, crossline step, sample interval: used as voxel size when a cube is written as NIfTI."""
        def step(v):
            return float(np.min(np.diff(v))) if len(v) > 1 else 1.0
        return step(self.ilines), step(self.xlines), step(self.samples)


def _open(path: Path, endian: str):
    try:
        return segyio.open(str(path), "r", ignore_geometry=True, endian=endian)
    except IndexError:  # segyio's answer to a file with headers and no traces
        raise LeanSegError(f"{path}: SEG-Y file has no traces (only the text and binary headers)") from None
    except (RuntimeError, ValueError, OSError) as err:
        raise LeanSegError(f"{path}: not a readable SEG-Y file ({err})") from None


# A survey with missing traces (f3-withdead holds 239 of 414) is fine; one whose traces would fill less than
# 1/_SPARSE of the grid (every trace its own inline and crossline) would only allocate an empty grid.
_SPARSE = 16


class SegyReader:
    """Lazy reader of a post-stack cube: ``read(i0, i1)`` gives inlines ``i0:i1`` as float32 ``(n, X, S)``.

    Missing traces read as zeros; ``geometry.live`` says where they are. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise LeanSegError(f"{self.path}: no such file")
        endian = _endian(self.path)
        self.file = _open(self.path, endian)
        try:
            self.geometry = self._bin(endian)
        except BaseException:
            self.file.close()
            raise

    def _bin(self, endian: str) -> SegyGeometry:
        f = self.file
        if f.tracecount == 0:
            raise LeanSegError(f"{self.path}: SEG-Y file has no traces")
        il, xl = self._inline_crossline(endian)
        ilines, il_pos = np.unique(il, return_inverse=True)
        xlines, xl_pos = np.unique(xl, return_inverse=True)
        positions = np.unique(il_pos.astype(np.int64) * len(xlines) + xl_pos).size
        if positions != f.tracecount:
            raise LeanSegError(f"{self.path}: {f.tracecount} traces on {positions} inline/crossline "
                               f"positions; only post-stack 3D cubes are supported (pre-stack gathers and 2D lines "
                               f"repeat positions)")
        if len(ilines) < 2 or len(xlines) < 2:
            raise LeanSegError(f"{self.path}: {len(ilines)} inline(s) x {len(xlines)} crossline(s): a 2D line or a "
                               "single trace, not a 3D cube")
        cells = len(ilines) * len(xlines)
        if cells > max(_SPARSE * f.tracecount, 1 << 12):  # a grid far sparser than the traces: not a binned cube
            raise LeanSegError(f"{self.path}: {f.tracecount:,} traces spread over a {len(ilines):,} x {len(xlines):,} "
                               "inline/crossline grid; the headers do not describe a 3D cube")
        index = np.full((len(ilines), len(xlines)), -1, dtype=np.int64)
        index[il_pos, xl_pos] = np.arange(f.tracecount)
        return SegyGeometry(self.path, endian, ilines, xlines, np.asarray(f.samples, dtype=np.float64), index)

    def _inline_crossline(self, endian: str) -> tuple[np.ndarray, np.ndarray]:
        """The inline and crossline numbers of every trace, (T,) int64 each.

        segyio's ``attributes`` reads a header word with one seek and read per trace per field (0.4 s for 110k
        traces); where the file is the regular sequence of fixed-size traces that segyio assumes too, both words
        come out of a map of the file in one strided numpy copy per chunk of traces (the map is bounded so that
        resident memory is, too).
        """
        f = self.file
        data_start = _TEXT + _BIN + f.ext_headers * _TEXT
        trace = _TRACE_HEADER + len(f.samples) * _SAMPLE_BYTES.get(int(f.bin[segyio.BinField.Format]), 0)
        if trace == _TRACE_HEADER or data_start + f.tracecount * trace != self.path.stat().st_size:
            return (np.asarray(f.attributes(segyio.TraceField.INLINE_3D)[:], dtype=np.int64),
                    np.asarray(f.attributes(segyio.TraceField.CROSSLINE_3D)[:], dtype=np.int64))
        word = np.dtype(">i4" if endian == "big" else "<i4")
        words = np.empty((f.tracecount, 2), word)
        chunk = max(1, _MAP_BYTES // trace)
        for lo in range(0, f.tracecount, chunk):
            hi = min(f.tracecount, lo + chunk)
            block = np.memmap(self.path, np.uint8, "r", offset=data_start + lo * trace, shape=(hi - lo, trace))
            words[lo:hi] = block[:, _INLINE_BYTE: _INLINE_BYTE + 8].view(word)  # inline, then crossline
            del block
        return words[:, 0].astype(np.int64), words[:, 1].astype(np.int64)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.geometry.shape

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Inlines ``start:stop`` as float32 ``(n, X, S)``; dead traces are zero. NaN or infinite samples are a
        one-line error naming the first one: every reader (whole cube, streamed slabs, statistics) goes through here."""
        index = self.geometry.trace_index[start:stop]
        shape = (*index.shape, self.shape[2])
        live = index >= 0
        traces = index[live]
        contiguous = traces.size > 0 and np.array_equal(traces, np.arange(traces[0], traces[0] + traces.size))
        if contiguous and traces.size == index.size:  # every trace live, in file order: segyio's array is the slab
            out = np.asarray(self.file.trace.raw[int(traces[0]): int(traces[0]) + traces.size],
                             dtype=np.float32).reshape(shape)
        else:
            out = np.zeros(shape, dtype=np.float32)
            if traces.size == 0:
                return out
            if contiguous:
                out[live] = self.file.trace.raw[int(traces[0]): int(traces[0]) + traces.size]  # one read
            else:  # crossline-sorted or irregular: trace by trace
                out[live] = np.stack([self.file.trace.raw[int(t)] for t in traces])
        # a sum is NaN or infinite when a sample is (or, rarely, when finite samples overflow it): one reduction
        # instead of a boolean array the size of the slab, and the exact check only then
        if not np.isfinite(out.sum()) and not np.isfinite(out).all():
            bad = np.argwhere(~np.isfinite(out))[0]
            raise LeanSegError(f"{self.path}: NaN or infinite sample at inline index {start + int(bad[0])}, crossline "
                               f"index {int(bad[1])}, sample {int(bad[2])}; fix or mute it before predicting")
        return out

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> SegyReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()




def _runs(sorted_values: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index ranges of consecutive integers in a sorted array."""
    breaks = np.flatnonzero(np.diff(sorted_values) != 1) + 1
    edges = [0, *breaks.tolist(), len(sorted_values)]
    return list(itertools.pairwise(edges))


class SegyWriter:
    """Writes a cube on ``geometry``'s grid as SEG-Y: the source's text, binary and trace headers, IEEE float
    samples, same byte order and trace order. ``write(start, values)`` writes inlines ``start:start+len(values)``.

    segyio writes the text and binary headers. The traces are written here as raw bytes, each source trace header
    copied verbatim: segyio copies a trace header through a dict of 91 fields (about 0.15 ms a trace, minutes
    on a large cube). ``create=False`` opens a file made earlier with the headers and pre-sized to ``size`` bytes,
    so that several processes write their inlines into it at their byte offsets (``leanseg.cluster``). Write to a
    temporary path and rename when done (``leanseg.io._files.atomic_path``): an unfinished file has traces missing.
    """

    def __init__(self, path: str | os.PathLike, geometry: SegyGeometry, create: bool = True):
        self.geometry = geometry
        with _open(geometry.path, geometry.endian) as source:
            source_format = int(source.bin[segyio.BinField.Format])
            if create:
                spec = segyio.spec()
                spec.samples = source.samples
                spec.format = 5  # IEEE float: a prediction is float, whatever the input's format
                spec.tracecount = source.tracecount
                spec.ext_headers = source.ext_headers
                spec.endian = geometry.endian
                with segyio.create(str(path), spec) as out:
                    for i in range(1 + source.ext_headers):
                        out.text[i] = source.text[i]
                    out.bin = source.bin
                    out.bin.update(format=5)
            self._data_start = _TEXT + _BIN + source.ext_headers * _TEXT
            self.size = self._data_start + source.tracecount * (_TRACE_HEADER + len(geometry.samples) * 4)
        n = len(geometry.samples)
        self._source_trace = _TRACE_HEADER + n * _SAMPLE_BYTES[source_format]
        self._out_trace = _TRACE_HEADER + n * 4
        self._float = np.dtype(">f4" if geometry.endian == "big" else "<f4")
        self._out = open(path, "r+b")

    def write(self, start: int, values: np.ndarray) -> None:
        """Write ``values`` ``(n, X, S)`` as inlines ``start:start+n``; dead positions are skipped."""
        index = self.geometry.trace_index[start: start + len(values)]
        live = index >= 0
        if live.all():  # no dead trace: the values as they are, not a copy through a mask
            traces, samples = index.reshape(-1), np.asarray(values).reshape(index.size, -1)  # (T,), (T, S)
        else:
            traces, samples = index[live], np.asarray(values)[live]
        if not np.all(traces[1:] > traces[:-1]):  # crossline-sorted or irregular: write in file order
            order = np.argsort(traces, kind="stable")
            traces, samples = traces[order], samples[order]
        for lo, hi in _runs(traces):  # one write per run of consecutive traces
            first, count = int(traces[lo]), hi - lo
            block = np.empty((count, self._out_trace), np.uint8)
            # the run's source trace headers through a map of just that run (so resident memory stays bounded):
            # one strided numpy copy, the samples between are neither read into Python nor decoded
            source = np.memmap(self.geometry.path, np.uint8, "r", offset=self._data_start + first * self._source_trace,
                               shape=(count, self._source_trace))
            block[:, :_TRACE_HEADER] = source[:, :_TRACE_HEADER]
            del source
            block[:, _TRACE_HEADER:].view(self._float)[:] = samples[lo:hi]  # converts and swaps bytes in one pass
            self._out.seek(self._data_start + first * self._out_trace)
            self._out.write(block.data)  # the buffer itself: no bytes copy

    def close(self) -> None:
        self._out.close()

    def __enter__(self) -> SegyWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_segy(path: str | os.PathLike) -> tuple[np.ndarray, SegyGeometry]:
    """The whole cube as float32 ``(1, I, X, S)`` and its geometry (for cubes that fit in memory)."""
    from leanseg import env

    with SegyReader(path) as reader:
        if np.prod(reader.shape, dtype=np.int64) > env.max_voxels():
            raise LeanSegError(f"{path}: {'x'.join(map(str, reader.shape))} samples are over the in-memory limit of "
                               f"{env.max_voxels():,}; `leanseg predict` streams such cubes")
        return reader.read()[None], reader.geometry


def write_segy(path: str | os.PathLike, array: np.ndarray, geometry: SegyGeometry) -> Path:
    """Write ``(I, X, S)`` values on ``geometry``'s grid with the source's headers (atomic)."""
    from leanseg.io._files import atomic_path

    array = np.asarray(array)
    if array.shape != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match the cube's {geometry.shape}")
    with atomic_path(path) as tmp, SegyWriter(tmp, geometry) as writer:
        writer.write(0, array)
    return Path(path)
