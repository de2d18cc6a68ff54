"""The napari plugin: open volumes with leanseg's readers, and segment an image layer with a zoo model or a
checkpoint into a Labels layer, in a worker thread with a progress bar.

napari finds it through the ``napari.manifest`` entry point (``pyproject.toml``) and ``leanseg/napari.yaml``.
napari is optional (``pip install 'leanseg[viewer]'``) and nothing else in leanseg imports this module.
Prediction is ``leanseg.segment``, the in-memory half of ``leanseg.predict``: the same normalisation, crop,
spacing, sliding window, labels and postprocessing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal

from leanseg.errors import LeanSegError
from leanseg.io import IMAGE_SUFFIXES, NIFTI_SUFFIXES, SEGY_SUFFIXES, NiftiGeometry, full_suffix, read_volume, stem

READ_SUFFIXES = NIFTI_SUFFIXES + SEGY_SUFFIXES + IMAGE_SUFFIXES
GEOMETRY_KEY = "leanseg_geometry"  # layer metadata: the geometry the reader read, so segment can resample by mm


def napari_get_reader(path: str | list[str]) -> Callable | None:
    """napari's reader hook: ``read_layers`` for NIfTI, SEG-Y and image files, None for anything else."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths or not all(full_suffix(Path(p)) in READ_SUFFIXES for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[tuple[Any, dict, str]]:
    """One image layer per file, in the axis order ``leanseg.io.read_volume`` gives (NIfTI in RAS order, SEG-Y as
    inline, crossline, sample), scaled by the voxel size in mm for NIfTI (SEG-Y steps mix metres and ms: unscaled)."""
    layers = []
    for p in [path] if isinstance(path, str | os.PathLike) else list(path):
        array, geometry = read_volume(p)  # (C, *spatial) float32
        scale = tuple(geometry.spacing) if isinstance(geometry, NiftiGeometry) else (1.0,) * (array.ndim - 1)
        kwargs: dict[str, Any] = {"name": stem(Path(p)), "scale": scale, "metadata": {GEOMETRY_KEY: geometry}}
        if array.shape[0] > 1:  # a 4D NIfTI: one layer per channel
            kwargs |= {"channel_axis": 0, "name": [f"{stem(Path(p))}[{c}]" for c in range(array.shape[0])]}
            layers.append((array, kwargs, "image"))
        else:
            layers.append((array[0], kwargs, "image"))
    return layers


def channels_for(layers: list, selected, meta) -> tuple[np.ndarray, Any]:
    """The ``(C, *spatial)`` input of a model from image layers: the selected layer for a one-channel model; for a
    multi-channel one, the layers named after the checkpoint's channels (t1, t1c, t2, flair...) in its order."""
    from leanseg.io import channel_of

    if meta.in_channels in (None, 1):
        return np.asarray(selected.data, dtype=np.float32)[None], selected.metadata.get(GEOMETRY_KEY)
    found: dict[str, Any] = {}
    for layer in layers:
        name = channel_of(f"{layer.name}.nii", meta.channels)
        if name is not None and np.shape(layer.data) == np.shape(selected.data):
            found.setdefault(name, layer)
    missing = [c for c in meta.channels if c not in found]
    if missing or len(found) != meta.in_channels:
        raise LeanSegError(f"the model needs {meta.in_channels} channels ({', '.join(meta.channels)}) as image layers "
                           f"named after them; none found for {', '.join(missing) or 'some'}")
    data = np.stack([np.asarray(found[c].data, dtype=np.float32) for c in meta.channels])
    return data, found[meta.channels[0]].metadata.get(GEOMETRY_KEY)


def _zoo_names() -> list[str]:
    from leanseg.zoo import names

    return list(names())


class SegmentWidget(Container):
    """The dock widget: an image layer, a zoo model or a checkpoint path, test-time mirroring, and a button whose
    ``run`` starts the worker (and returns it, so tests can wait on it)."""

    def __init__(self, viewer: napari.viewer.Viewer):
        self.viewer = viewer
        # the image layers of this viewer (magicgui's own napari lookup needs the widget docked in a window)
        self.image = ComboBox(label="image", choices=self._images)
        self.zoo = ComboBox(label="zoo model", choices=_zoo_names())
        self.checkpoint = FileEdit(label="or checkpoint", mode=FileDialogMode.EXISTING_FILE,
                                   filter="*.safetensors")
        self.tta = CheckBox(label="mirror (TTA)", value=False)
        self.button = PushButton(text="Segment")
        super().__init__(widgets=[self.image, self.zoo, self.checkpoint, self.tta, self.button])
        self.button.changed.connect(self.run)
        self.worker: Any = None
        # the layer list changes after the widget is built: napari refreshes a docked widget's choices, a widget
        # built by hand (tests, scripts) needs these
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)

    def _images(self, widget=None) -> list:
        return [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]

    @property
    def model(self) -> str:
        """The checkpoint path when one is chosen, else the zoo name."""
        chosen = str(self.checkpoint.value or "")
        return chosen if chosen not in ("", ".") and Path(chosen).is_file() else str(self.zoo.value)

    def run(self, *args):
        self.worker = start(self.viewer, self.image.value, self.model, tta=bool(self.tta.value))
        return self.worker


def _avoid_llvm_clash() -> None:
    """Keep Triton out of a process where Mesa's OpenGL has loaded the system's LLVM.

    Triton bundles its own LLVM, and loading it after Mesa's software renderer (llvmpipe: Xvfb, machines without a
    GPU driver) has loaded libLLVM segfaults the process (measured here: napari's canvas, then ``import triton``,
    in any thread). napari draws its canvas before a plugin runs, and torch imports Triton when it is installed.
    This plugin predicts on the CPU, where Triton is not used, so an import that would crash is made to fail
    instead (torch and leanseg then go without it). Linux only (/proc); elsewhere nothing changes.
    """
    if "triton" in sys.modules:  # loaded before the GL driver: no clash
        return
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return
    if "libLLVM" in maps:
        sys.modules["triton"] = None  # type: ignore[assignment]  # 'import triton' raises ImportError


class _Ticks(QObject):
    tick = Signal(int, int)  # (windows done, windows in all)


def start(viewer, layer, model: str, tta: bool = False):
    """Segment ``layer`` with ``model`` in a napari worker thread; the label map arrives as a Labels layer named
    ``"<layer> <model>"`` on the layer's scale. Returns the started worker; errors become napari notifications."""
    if layer is None:
        show_error("leanseg: open an image first")
        return None
    _avoid_llvm_clash()

    bar: Any = None

    def advance(done: int, total: int) -> None:  # on the GUI thread: napari's progress bar is a Qt widget
        nonlocal bar
        if bar is None:
            bar = progress(total=total, desc=f"leanseg {Path(model).name}: windows")
        bar.update(done - bar.n)

    ticks = _Ticks()
    ticks.tick.connect(advance)  # emitted from the worker thread, delivered on the GUI thread (queued)

    @thread_worker(ignore_errors=True)  # errors go to failed() below, as a notification
    def work():
        from leanseg.checkpoint import read_meta
        from leanseg.prediction import segment

        meta = read_meta(model)
        array, geometry = channels_for(list(viewer.layers), layer, meta)
        return segment(array, model, geometry, tta=tta, progress=ticks.tick.emit)

    def close_bar() -> None:
        if bar is not None:
            bar.close()

    def done(label_map: np.ndarray) -> None:
        viewer.add_labels(label_map, name=f"{layer.name} {Path(model).name}", scale=layer.scale,
                          translate=layer.translate)

    def failed(err: Exception) -> None:
        show_error(f"leanseg: {err}")

    worker = work()
    worker.returned.connect(done)
    worker.errored.connect(failed)
    worker.finished.connect(close_bar)
    worker.ticks = ticks  # lives as long as the worker
    worker.start()
    return worker


__all__ = ["READ_SUFFIXES", "SegmentWidget", "channels_for", "napari_get_reader", "read_layers", "start"]
