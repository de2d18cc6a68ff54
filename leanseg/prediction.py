"""``leanseg.predict``: files in, label map (and optionally probabilities and a preview) out.

NIfTI files, case folders and images are predicted in memory (a brain volume is a few hundred MB at most);
SEG-Y cubes always stream slab by slab along the inline axis, so their size is bounded by the disk, not RAM.
(The module is not called ``predict`` because the package attribute ``leanseg.predict`` is this function.)
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.checkpoint import CheckpointMeta
from leanseg.errors import LeanSegError, LeanSegWarning
from leanseg.io import (
    NiftiGeometry,
    SegyReader,
    SegyWriter,
    atomic_path,
    check_output,
    check_seg_writer,
    find_case_files,
    full_suffix,
    is_dicom_folder,
    kind_of,
    read_volume,
    stem,
    write_dicom_seg,
    write_nifti,
    write_volume,
)
from leanseg.io._files import remove_stale_partials
from leanseg.options import parse_window, resolve_device
from leanseg.postprocess import Postprocess
from leanseg.preview import OrthoSlices
from leanseg.spacing import needs_resampling, parse_spacing, resample, target_shape

_DEFAULT_SUFFIX = {"nifti": None, "folder": ".nii.gz", "segy": ".sgy", "image": ".png"}


def default_output(first_input: str | os.PathLike) -> Path:
    """Beside the input, named after it: ``a.nii.gz`` -> ``a_pred.nii.gz``, ``case/`` -> ``case_pred.nii.gz``."""
    path = Path(first_input)
    kind = kind_of(path)
    if kind == "folder":
        return path.parent / f"{path.name}_pred.nii.gz"
    return path.parent / f"{stem(path)}_pred{_DEFAULT_SUFFIX.get(kind) or full_suffix(path)}"


def _input_paths(inputs) -> list[Path]:
    """One path or a sequence of them, as Paths; anything else (None, a number, an empty list) is a one-line error."""
    from leanseg.io import as_path

    if isinstance(inputs, str | os.PathLike):
        return [as_path(inputs, "inputs")]
    if not isinstance(inputs, Sequence) or not inputs:
        raise LeanSegError(f"inputs must be a path or a non-empty list of paths, got {inputs!r}")
    return [as_path(p, "each input") for p in inputs]


def _sibling(output: Path, tag: str, suffix: str | None = None) -> Path:
    return output.parent / f"{stem(output)}_{tag}{suffix or full_suffix(output)}"


def _apply(norm, array: np.ndarray) -> np.ndarray:
    return array if norm is None else np.asarray(norm(array), dtype=np.float32)


def _checkpoint(model, uncertainty: bool = False) -> tuple[Any, CheckpointMeta]:
    """(network, meta) from a checkpoint path or a (network, meta) pair whose meta is a CheckpointMeta or its JSON;
    from several of them (or for an uncertainty map) a ``leanseg.ensemble.Ensemble``."""
    from leanseg.checkpoint import load_model
    from leanseg.ensemble import load_ensemble, members_of

    members = members_of(model)
    if members is not None or uncertainty:
        return load_ensemble(members or [model], uncertainty)
    if isinstance(model, str | os.PathLike):
        return load_model(model)  # a path, or a zoo name
    if not isinstance(model, tuple | list) or len(model) != 2:
        raise LeanSegError("model must be a checkpoint path or a (model, meta) pair as leanseg.load_model returns")
    net, meta = model
    return net, meta if isinstance(meta, CheckpointMeta) else CheckpointMeta.from_json(meta, source="model meta")


def predict(inputs: str | os.PathLike | Sequence[str | os.PathLike], model=None,
            output: str | os.PathLike | None = None,
            window: int | Sequence[int] | None = None, overlap: float = 0.5, tta: bool = False, device: str = "cpu",
            amp: bool = False, probabilities: bool = False, preview: bool = False, batch_size: int = 1,
            slab: int | None = None, halo: int | None = None, postprocess=None, uncertainty: bool = False,
            progress: bool = True, crop: bool | None = None, precision: str = "fp32", spacing=None,
            scheduler: str | None = None, workers: int | None = None) -> Path:
    """Predict a volume and write its label map; returns the label map's path.

    Args:
        inputs: a NIfTI file (3D, or 4D with channels last), several NIfTI files (one per channel, in the
            checkpoint's channel order), a case folder (files found by the checkpoint's channel names), DICOM
            series folders (one per channel, in order; the label map is written as NIfTI), a SEG-Y cube or a 2D
            image.
        model: a checkpoint path (``leanseg.save_model``), a zoo name (``leanseg models --pretrained``) or a
            ``(model, meta)`` pair as ``leanseg.load_model`` returns it; or a list of them, an ensemble whose
            probabilities are averaged (``leanseg.ensemble``). None: the ``best.safetensors`` that ``leanseg train``
            last wrote to runs/leanseg when it fits the input, else the zoo model for the input's kind
            (``leanseg.pretrained.default_model``); which one is said on stderr.
        output: the label map; its suffix picks the format (.nii/.nii.gz, .sgy/.segy, .npy, .png/.tif; .dcm: a
            DICOM SEG referencing the input series, for DICOM input, needs highdicom). Default:
            beside the first input, named after it with ``_pred``. Probabilities go to ``<output>_probs`` and
            the preview to ``<output>_preview.png``.
        window: sliding-window size (default: the checkpoint's ``window``, else 128 per axis).
        overlap, tta, batch_size: see ``leanseg.inference.sliding_window_predict``.
        device: "cpu" (default), "cuda" or "auto". amp: float16 autocast, on CUDA only.
        slab, halo: SEG-Y streaming: inlines written per step and inlines of context read on each side (default:
            the window less two halos; an eighth of the window), see ``leanseg.stitch.predict_streaming``.
        postprocess: component rules for the label map (``leanseg.postprocess``: JSON text, a dict or "none");
            default: the checkpoint's. Not for SEG-Y, which is streamed.
        uncertainty: also write ``<output>_uncertainty``, the voxel-wise std of the probabilities over the
            ensemble's models and the mirrorings of ``tta`` (mean over output channels; float32).
        crop: NIfTI/image inputs: run the sliding window on the bounding box of the voxels non-zero in any channel
            only (normalisation statistics are then those of the box, as in nnU-Net) and give the rest background.
            Default: on when the checkpoint normalises with ``{"kind": "zscore", "nonzero": true}`` (skull-stripped
            BraTS, where the brain fills about a third of the grid).
        precision: "fp32" (default) or "bf16" (``leanseg.nn.precision.prepare``); probabilities stay float32.
        spacing: voxel size in mm to predict at ("1,1,1", 1.0 or (1, 1, 1)); each NIfTI/DICOM input is resampled to
            it (linearly) and the probabilities back onto the input's exact grid before the labels are taken
            (``leanseg.spacing``). Default: the checkpoint's ``spacing`` (none for checkpoints without one); "none"
            predicts on the input's own grid.
        scheduler, workers: a SEG-Y cube only: predict its slabs on the Dask cluster at the address ``scheduler``,
            or on a local one of ``workers`` processes (``leanseg.cluster``); the label map is written as SEG-Y.
            For many cases, see ``leanseg.predict_folder``.
    """
    inputs = _input_paths(inputs)
    from leanseg.inference import check_options

    check_options(overlap=overlap, batch_size=batch_size, slab=slab, halo=halo)  # before any work
    if model is None:  # the last trained model that fits, else the zoo's for this kind of input
        from leanseg.pretrained import default_model

        model, why = default_model([Path(p) for p in inputs])
        print(f"leanseg: {why}", file=sys.stderr)
    if scheduler is not None or workers is not None:
        return _predict_on_cluster([Path(p) for p in inputs], model, output, scheduler, workers, window=window,
                                   overlap=overlap, tta=tta, device=device, amp=amp, batch_size=batch_size,
                                   precision=precision, slab_halo=(slab, halo), progress=progress,
                                   extras=dict(probabilities=probabilities, preview=preview, uncertainty=uncertainty,
                                               postprocess=postprocess not in (None, "none"),
                                               spacing=spacing is not None))
    predictor = Predictor(model, window=window, overlap=overlap, tta=tta, device=device, amp=amp,
                          probabilities=probabilities, preview=preview, batch_size=batch_size, slab=slab, halo=halo,
                          postprocess=postprocess, uncertainty=uncertainty, progress=progress, crop=crop,
                          precision=precision, spacing=spacing)
    return predictor(inputs, output)


def _predict_on_cluster(inputs: list[Path], model, output, scheduler: str | None, workers: int | None, *, window,
                        slab_halo: tuple, progress: bool, extras: dict, **options) -> Path:
    """A SEG-Y cube's slabs on Dask workers (``leanseg.cluster.predict_segy``); the client loads no model."""
    from leanseg.cluster import connect

    if len(inputs) > 1 or kind_of(inputs[0]) != "segy":
        raise LeanSegError(f"{inputs[0]}: scheduler and workers spread one SEG-Y cube's slabs, or a folder's cases "
                           "(leanseg predict IN_FOLDER -o OUT_FOLDER)")
    asked = [name for name, given in extras.items() if given]
    if asked:
        raise LeanSegError(f"{inputs[0]}: over Dask workers only the label map is written; drop {', '.join(asked)}")
    if workers is not None and workers < 1:
        raise LeanSegError(f"workers must be at least 1, got {workers}")
    output = Path(output) if output is not None else default_output(inputs[0])
    with connect(scheduler, workers) as client:
        predict_segy_on_cluster(client, model, options, inputs[0], output, slab_halo, window=window,
                                progress=progress)
    return output


class Predictor:
    """The model and the options of ``leanseg.predict``, loaded and validated once; ``predictor(inputs, output)``
    predicts one case. ``leanseg.predict`` makes one per call; ``leanseg.predict_folder`` one per process (or per
    Dask worker) for all its cases. Arguments are ``leanseg.predict``'s (``model`` may not be None here)."""

    def __init__(self, model, *, window: int | Sequence[int] | None = None, overlap: float = 0.5, tta: bool = False,
                 device: str = "cpu", amp: bool = False, probabilities: bool = False, preview: bool = False,
                 batch_size: int = 1, slab: int | None = None, halo: int | None = None, postprocess=None,
                 uncertainty: bool = False, progress: bool = True, crop: bool | None = None,
                 precision: str = "fp32", spacing=None):
        from leanseg.ensemble import expand_models
        from leanseg.inference import check_options, check_window

        check_options(overlap=overlap, batch_size=batch_size, slab=slab, halo=halo)
        model = expand_models(model)  # a run folder -> its best checkpoint; a cross-validation -> its folds
        net, meta = _checkpoint(model, uncertainty)
        if meta.extra.get("finished") is False:  # saved by a run that was stopped (or is still going)
            print(f"leanseg: warning: the model is from an unfinished run (epoch {meta.extra.get('epoch', -1) + 1} "
                  f"of {meta.extra.get('epochs', '?')}); `leanseg train ... --resume` finishes it", file=sys.stderr)
        self.rules = meta.postprocess if postprocess is None else Postprocess.parse(postprocess, meta.label_manager,
                                                                                     "--postprocess")
        if uncertainty and len(net.members) * (2 ** (meta.spatial_dims or 3) if tta else 1) < 2:
            raise LeanSegError("--uncertainty needs several models (-m a -m b) or --tta to take a spread over")
        dev = resolve_device(device, what="device")
        if meta.spatial_dims is not None:
            check_window(window_for(meta, window, meta.spatial_dims))
        self.asked = parse_spacing(spacing, meta.spatial_dims) if spacing is not None else None  # before any work
        # the checkpoints are read too: never an output
        self.checkpoints = [Path(m) for m in (model if isinstance(model, list) else [model])
                            if isinstance(m, str | os.PathLike)]
        self.meta, self.window, self.spacing, self.crop = meta, window, spacing, crop
        self.probabilities, self.preview, self.uncertainty = probabilities, preview, uncertainty
        self.progress = progress
        self.slab_halo, self.postprocess_asked = (slab, halo), postprocess
        self.options: dict[str, Any] = dict(overlap=overlap, tta=tta, batch_size=batch_size, device=dev, amp=amp,
                                            activation=meta.label_manager.activation)
        self.net = _prepare(net.to(dev), precision)

    def sources(self, inputs: Sequence[Path]) -> list[Path]:
        """The files to read for ``inputs``: a case folder's channel files, NIfTI channel files in order."""
        kind = kind_of(inputs[0])
        sources = [Path(p) for p in inputs]
        if kind == "folder" and not is_dicom_folder(inputs[0]):  # DICOM series folders are read as they are
            if len(inputs) > 1:  # the case folder's files are the channels: anything more would be ignored
                raise LeanSegError(f"{inputs[1]}: a case folder ({inputs[0]}) holds every channel; give the folder "
                                   "alone, or the channel files without it")
            sources = find_case_files(inputs[0], self.meta.channels)
        elif kind == "nifti" and len(sources) > 1:
            sources = _in_channel_order(sources, self.meta.channels)
        return sources

    def outputs(self, kind: str, output: Path) -> list[Path]:
        """Every file a case of input ``kind`` writes for the label map ``output``: the label map, then the
        probabilities, the preview and the spread as asked."""
        seg_out = kind_of(output) == "dicom"
        arrays = ".npy" if kind in ("segy", "image") else ".nii.gz" if seg_out else None  # probabilities, spread
        return [output] + ([_sibling(output, "probs", arrays)] if self.probabilities else []) + \
            ([_sibling(output, "preview", ".png")] if self.preview else []) + \
            ([_sibling(output, "uncertainty", arrays)] if self.uncertainty else [])

    def read(self, inputs: Sequence[str | os.PathLike]) -> tuple[np.ndarray, Any]:
        """``(array, geometry)`` of a case that is predicted in memory (not SEG-Y), for reading ahead."""
        return read_volume(self.sources([Path(p) for p in inputs]))

    def __call__(self, inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None = None,
                 volume: tuple[np.ndarray, Any] | None = None) -> Path:
        """Predict one case and write its outputs; ``volume``: what ``read(inputs)`` gave, when read ahead."""
        paths = _input_paths(inputs)
        meta, labels = self.meta, self.meta.label_manager
        if output is None:
            output = default_output(paths[0])
            if output.exists():  # a name chosen for the user never replaces a file (a case folder's own seg, say)
                raise LeanSegError(f"{output}: exists; give -o to choose the output (and to overwrite a prediction)")
        output = Path(output)
        kind = kind_of(paths[0])
        seg_out = kind_of(output) == "dicom"  # DICOM SEG, referencing the input series
        if seg_out:
            if kind != "folder" or not is_dicom_folder(paths[0]):
                raise LeanSegError(f"{output}: DICOM SEG output references a DICOM series, and {paths[0]} is not "
                                   "one; write .nii.gz")
            check_seg_writer()
        else:
            _check_output_kind(output, kind)
        sources = self.sources(paths)
        outputs = self.outputs(kind, output)
        # the checkpoints are read too: never an output; nor is anything written into an input folder (it would
        # join the series or the case on the next read)
        read = sources + self.checkpoints + ([Path(paths[0])] if kind == "folder" else [])
        for out in outputs:
            check_output(out, read)
        spread_path = outputs.pop() if self.uncertainty else None
        if kind == "segy":
            if len(paths) > 1:
                raise LeanSegError(f"{paths[1]}: a SEG-Y cube is one file; give one input")
            if self.asked is not None:
                raise LeanSegError(f"{paths[0]}: a SEG-Y cube has no voxel size in mm to resample; drop --spacing")
            if self.uncertainty or self.postprocess_asked not in (None, "none"):
                raise LeanSegError(f"{paths[0]}: --uncertainty and --postprocess need the whole volume in memory; "
                                   "a SEG-Y cube is streamed")
            _predict_segy(Path(paths[0]), self.net, meta, outputs, self.window, self.slab_halo, self.options,
                          self.progress)
            return output
        array, geometry = volume if volume is not None else read_volume(sources)
        where = ", ".join(str(p) for p in sources)
        label_map, probs, spread = _segment(self.net, meta, array, geometry, where=where, rules=self.rules,
                                            window=self.window, options=self.options, progress=self.progress,
                                            crop=self.crop, spacing=self.spacing, asked=self.asked,
                                            uncertainty=self.uncertainty)
        for tag in ("probs", "preview", "uncertainty"):  # what a killed earlier run left, even if not written now
            remove_stale_partials(_sibling(output, tag))
        # the label map last: it marks the case as done (a folder run skips it), so it never stands without the
        # other outputs asked for; if it cannot be written, they are removed again
        written: list[Path] = []
        try:
            if spread is not None and spread_path is not None:
                written.append(write_volume(spread_path, spread[0].numpy(), geometry))
            if self.probabilities:
                written.append(write_volume(outputs[1], probs.numpy(), geometry))
            if self.preview:
                slices = OrthoSlices(label_map.shape)
                slices.add(0, array[0], label_map)
                slices.save(outputs[-1])
                written.append(Path(outputs[-1]))
            if seg_out:  # one segment per class (background aside) or region, named as the checkpoint names them
                from leanseg import __version__

                segments = {name: values for name, values in labels.scored.items() if set(values) != {0}}
                write_dicom_seg(output, label_map, geometry, sources[0], segments, algorithm=meta.model,
                                version=__version__)
            else:
                write_volume(output, label_map, geometry)
        except BaseException:
            for path in written:
                Path(path).unlink(missing_ok=True)
            raise
        return output


def _segment(net, meta: CheckpointMeta, array: np.ndarray, geometry, *, where: str, rules: Postprocess, window,
             options: dict, progress, crop: bool | None, spacing, asked: tuple[float, ...] | None,
             uncertainty: bool) -> tuple[np.ndarray, Any, Any]:
    """What predict does between reading and writing: ``(label map, probabilities, spread or None)`` of ``array``
    ``(C, *spatial)`` on ``geometry``'s grid."""
    from leanseg.inference import nonzero_box, paste

    labels = meta.label_manager
    in_channels = meta.in_channels
    if in_channels is not None and array.shape[0] != in_channels:
        raise LeanSegError(f"{where}: {array.shape[0]} channel(s) but the checkpoint expects {in_channels}"
                           f" ({', '.join(meta.channels)})")
    if meta.spatial_dims not in (None, array.ndim - 1):
        raise LeanSegError(f"{where}: a {array.ndim - 1}D input for a {meta.spatial_dims}D model")
    target = _target_spacing(spacing, asked, meta, geometry, where)
    for axis, (n, want) in enumerate(zip(array.shape[1:], target or (), strict=False)):
        have = geometry.spacing[axis]  # canonical axes, as the array's
        if n > 1 and want > n * have:  # a voxel wider than the volume collapses it to one voxel of one label
            raise LeanSegError(f"{where}: a spacing of {want:g} mm is wider than the volume along axis {axis} "
                               f"({n} x {have:g} mm)")
    box = nonzero_box(array) if (_crops_by_default(meta) if crop is None else crop) else None
    inside = array if box is None else array[(slice(None),) + tuple(box)]
    grid = inside.shape[1:]
    shape = target_shape(grid, geometry.spacing, target) if target is not None else tuple(grid)
    _check_work(shape, grid if target is not None else None, array.shape[0], labels.num_outputs, where)
    if target is not None:  # to the model's spacing before normalising, as training resamples on loading
        inside = resample(inside, shape).numpy()
    probs = _predict_array(net, _apply(meta.normalization.transform(), inside), meta, window, options, progress)
    if target is not None:  # probabilities (and the spread) linearly back onto the input's grid, then the labels
        probs = resample(probs, grid)
    spread = None
    if uncertainty:  # the ensemble's last channel is the spread
        probs, spread = probs[:-1], probs[-1:]
    if box is not None:
        probs = paste(probs, box, array.shape[1:], labels.background)
        spread = paste(spread, box, array.shape[1:], [0.0]) if spread is not None else None
    return rules.apply(labels.decode(probs), labels), probs, spread


def _check_work(shape, grid, channels: int, outputs: int, where: str) -> None:
    """The memory the prediction of one volume holds at once, against the budget, before any of it is allocated:
    the (resampled) input, the blended probabilities with their weights and a copy, and the probabilities brought
    back onto the input's ``grid`` when resampling. An input's header is checked when it is read; this checks what
    resampling (a 10 mm file at a 1 mm model, --spacing 0.4) and the model's outputs make of it."""
    from leanseg import env

    values = math.prod(shape) * (channels + 2 * outputs + 1) + (math.prod(grid) * outputs if grid else 0)
    env.check_budget(values, where, f"predicting {'x'.join(map(str, shape))} voxels ({channels} channel(s) in, "
                                    f"{outputs} out{', resampled' if grid else ''})")


def segment(array: np.ndarray, model, geometry=None, *, window: int | Sequence[int] | None = None,
            overlap: float = 0.5, tta: bool = False, device: str = "cpu", amp: bool = False, batch_size: int = 1,
            postprocess=None, crop: bool | None = None, spacing=None, precision: str = "fp32",
            progress: bool | Callable[[int, int], None] = False) -> np.ndarray:
    """The label map of a volume already in memory, as ``leanseg.predict`` computes it between reading and writing
    (for notebooks and the napari plugin, ``leanseg.viewer``).

    ``array``: ``(C, *spatial)`` in the axis order ``leanseg.io.read_volume`` returns (``image[None]`` for one
    channel), with its ``geometry`` (needed only to resample to a ``spacing``); ``model``: a checkpoint path, zoo
    name or ``(model, meta)`` pair, or a list of them (an ensemble). ``progress``: a text bar (True) or
    ``progress(done, total)`` called after each batch of windows. Other arguments as ``leanseg.predict``'s.
    """
    from leanseg.ensemble import expand_models
    from leanseg.inference import check_options, check_window

    check_options(overlap=overlap, batch_size=batch_size)
    net, meta = _checkpoint(expand_models(model))
    rules = meta.postprocess if postprocess is None else Postprocess.parse(postprocess, meta.label_manager,
                                                                            "postprocess")
    dev = resolve_device(device, what="device")
    try:
        values = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise LeanSegError(f"array: expected numbers of shape (C, *spatial), got {type(array).__name__} "
                           f"({str(err).splitlines()[0] if str(err) else 'not numeric'})") from None
    if values.ndim not in (3, 4) or min(values.shape) < 1:
        raise LeanSegError(f"array: expected (C, *spatial) with 2 or 3 spatial axes, got shape {values.shape}")
    if not np.isfinite(values).all():  # as the file readers refuse them: a NaN spreads through every window
        bad = int(values.size - np.isfinite(values).sum())
        raise LeanSegError(f"array: {bad} voxels are NaN or infinite; fix or mask them before segmenting")
    if meta.spatial_dims not in (None, values.ndim - 1):
        raise LeanSegError(f"array: a {values.ndim - 1}D input for a {meta.spatial_dims}D model")
    check_window(window_for(meta, window, values.ndim - 1))
    asked = parse_spacing(spacing, values.ndim - 1) if spacing is not None else None
    options = dict(overlap=overlap, tta=tta, batch_size=batch_size, activation=meta.label_manager.activation,
                   device=dev, amp=amp)
    net = _prepare(net.to(dev), precision)
    where = str(getattr(geometry, "path", None) or "array")
    return _segment(net, meta, values, geometry, where=where, rules=rules, window=window, options=options,
                    progress=progress, crop=crop, spacing=spacing, asked=asked, uncertainty=False)[0]


_OUTPUT_KINDS = {"nifti": ("nifti", "npy"), "folder": ("nifti", "npy"), "segy": ("segy", "npy", "nifti"),
                 "image": ("image", "npy", "nifti")}


def _check_output_kind(output: Path, kind: str) -> None:
    """Refuse, before any work, an output format that cannot hold a prediction of this kind of input. An input kind
    that predict does not read (.npy, a single .dcm file) is left to the reader, whose message names the input."""
    if kind not in _OUTPUT_KINDS:
        return
    out_kind = kind_of(output)
    if out_kind not in _OUTPUT_KINDS.get(kind, ()):
        names = {"nifti": ".nii.gz", "npy": ".npy", "segy": ".sgy", "image": ".png"}
        allowed = ", ".join(names[k] for k in _OUTPUT_KINDS.get(kind, ()))
        raise LeanSegError(f"{output}: a prediction of a {kind} input is written as {allowed}")


def _in_channel_order(files: list[Path], channels: Sequence[str]) -> list[Path]:
    """Channel files in the checkpoint's order when their names say which channel each is (t1c, flair, ...).

    Listed in another order, they are reordered with a note; names that identify no channel (or two) keep the
    order given, as the user's statement of it.
    """
    from leanseg.io import channel_of

    if not channels or len(files) != len(channels):
        return files
    named = [channel_of(f, channels) for f in files]
    if None in named or len(set(named)) != len(named):
        return files
    ordered = [files[named.index(c)] for c in channels]
    if ordered != files:
        warnings.warn(f"channel files reordered by their names to the checkpoint's order {', '.join(channels)}: "
                      f"{', '.join(p.name for p in ordered)}", LeanSegWarning, stacklevel=3)
    return ordered


def _target_spacing(spacing, asked: tuple[float, ...] | None, meta: CheckpointMeta, geometry,
                    where: str) -> tuple[float, ...] | None:
    """The spacing to predict at, or None to predict on the input's grid (already at it, or "none").

    Only NIfTI and DICOM inputs have a voxel size in mm; a checkpoint's spacing is not applied to images or cubes,
    and an explicit ``spacing`` for one is an error.
    """
    if isinstance(spacing, str) and spacing.strip().lower() == "none":
        return None
    if not isinstance(geometry, NiftiGeometry):
        if asked is not None:
            raise LeanSegError(f"{where}: this input has no voxel size in mm to resample; drop --spacing")
        return None
    target = parse_spacing(asked or meta.spacing, len(geometry.spacing), what="spacing")  # one size: every axis
    return target if target is not None and needs_resampling(geometry.spacing, target) else None


def _crops_by_default(meta: CheckpointMeta) -> bool:
    return meta.normalization.kind == "zscore" and meta.normalization.nonzero


def _prepare(net, precision: str):
    """``leanseg.nn.precision.prepare`` for a network or an ensemble. An Ensemble calls its members, never its own
    forward, so each member gets the casts (input to bf16, output back to float32)."""
    from leanseg.nn.precision import prepare

    members = getattr(net, "members", None)
    if members is None:
        return prepare(net, precision)
    for member in members:
        prepare(member, precision)
    return net


def window_for(meta: CheckpointMeta, window, ndim: int) -> tuple[int, ...]:
    """The window asked for, else the one the checkpoint was trained with, else 128 per axis."""
    return parse_window(window or meta.window or 128, ndim)


def _predict_array(net, array: np.ndarray, meta: CheckpointMeta, window, options: dict, progress: bool):
    import torch

    from leanseg.inference import sliding_window_predict

    x = torch.from_numpy(array)[None]
    probs = sliding_window_predict(net, x, window_for(meta, window, array.ndim - 1), progress=progress, **options)[0]
    if tuple(probs.shape[1:]) != tuple(array.shape[1:]):  # MONAI would rescale a smaller output without a word
        raise LeanSegError(f"the model's output grid {list(probs.shape[1:])} differs from its input's "
                           f"{list(array.shape[1:])}; a segmentation model must return one value per input voxel")
    check_finite_output(probs)
    return probs


def check_finite_output(probs) -> None:
    """A non-finite probability is an error naming the stage: argmax over NaN would give background everywhere."""
    import torch

    if not bool(torch.isfinite(probs).all()):
        bad = int(probs.numel() - torch.isfinite(probs).sum())
        raise LeanSegError(f"the network's output has {bad} NaN or infinite probabilities (inputs and weights were "
                           "finite: an overflow inside the model?); no label map was written")


def segy_normalizer(reader: SegyReader, meta: CheckpointMeta):
    """The checkpoint's normalisation with statistics from 16 inlines spread over the cube (one lazy pass over the
    whole cube would cost a full read). Each Dask worker of a distributed stream computes the same."""
    picks = np.unique(np.linspace(0, reader.shape[0] - 1, 16).astype(int))
    sample = np.stack([reader.read(i, i + 1)[0] for i in picks])[None]
    return meta.normalization.transform(stats_from=sample)


def _predict_segy(path: Path, net, meta: CheckpointMeta, outputs: list[Path], window, slab_halo, options: dict,
                  progress: bool) -> None:
    """Stream a SEG-Y cube: read inline slabs lazily, write labels (and probabilities) slab by slab."""
    from leanseg.inference import check_window_count
    from leanseg.stitch import predict_streaming

    output = outputs[0]
    kind = kind_of(output)
    if kind not in ("segy", "npy", "nifti"):
        raise LeanSegError(f"{output}: a SEG-Y prediction is written as .sgy, .npy or NIfTI")
    with SegyReader(path) as reader, ExitStack() as stack:
        geometry = reader.geometry
        check_window_count(geometry.shape, window_for(meta, window, 3), options["overlap"])
        if meta.in_channels not in (None, 1):
            raise LeanSegError(f"{path}: a SEG-Y cube has 1 channel but the checkpoint expects {meta.in_channels}")
        decoder = meta.label_manager
        # a slab's memory (its inlines with both halos, each crosslines x samples from the headers), before any read
        first = window_for(meta, window, 3)[0]
        halo = first // 8 if slab_halo[1] is None else slab_halo[1]
        rows = min(geometry.shape[0], (slab_halo[0] or max(1, first - 2 * halo)) + 2 * halo)
        from leanseg import env

        env.check_budget(rows * geometry.shape[1] * geometry.shape[2] * (2 + 2 * decoder.num_outputs), str(path),
                         f"a slab of {rows} inlines x {geometry.shape[1]:,} crosslines x {geometry.shape[2]:,} "
                         f"samples with {decoder.num_outputs} outputs")
        norm = segy_normalizer(reader, meta)
        live = geometry.live
        labels_out: Any  # a SEG-Y writer, a memory-mapped .npy or an array, all indexed by inline
        if kind == "segy":
            labels_out = stack.enter_context(SegyWriter(stack.enter_context(atomic_path(output)), geometry))
        elif kind == "npy":
            labels_out = np.lib.format.open_memmap(stack.enter_context(atomic_path(output)), "w+", decoder.dtype,
                                                   geometry.shape)
            stack.callback(labels_out.flush)
        else:  # NIfTI: the whole label map in memory, written once all slabs succeeded
            labels_out = np.zeros(geometry.shape, dtype=decoder.dtype)
        probs_out = None
        if len(outputs) > 1 and outputs[1].name.endswith("_probs.npy"):
            shape = (decoder.num_outputs, *geometry.shape)
            probs_out = np.lib.format.open_memmap(stack.enter_context(atomic_path(outputs[1])), "w+", np.float32, shape)
            stack.callback(probs_out.flush)
        slices = OrthoSlices(geometry.shape) if outputs[-1].name.endswith("_preview.png") else None

        def read(lo, hi):
            return _apply(norm, reader.read(lo, hi)[None])

        def write(start, probs):
            check_finite_output(probs)
            labels = decoder.decode(probs)
            stop = start + len(labels)
            labels[~live[start:stop]] = 0
            if kind == "segy":
                labels_out.write(start, labels)
            else:
                labels_out[start:stop] = labels
            if probs_out is not None:
                probs_out[:, start:stop] = probs.numpy()
            if slices is not None:
                slices.add(start, reader.read(start, stop), labels)

        predict_streaming(net, read, reader.shape[0], write, window_for(meta, window, 3), slab=slab_halo[0],
                          halo=slab_halo[1], progress=progress, **options)
    if kind == "nifti":
        write_nifti(output, labels_out, None, geometry.spacing)
    if slices is not None:
        slices.save(outputs[-1])


# ------------------------------------------------------------------------------------------- a SEG-Y cube on Dask
_READERS: dict[str, Any] = {}  # per worker: path -> (SegyReader, normalizer); one survey at a time
_STITCHERS: dict[str, Any] = {}  # per worker: token -> SlabStitcher (slabs of one shape share the window weights)


def _segy_source(path: str, predictor):
    entry = _READERS.get(path)
    if entry is None:
        for reader, _ in _READERS.values():
            reader.__exit__(None, None, None)
        _READERS.clear()
        reader = SegyReader(path)
        entry = _READERS[path] = (reader, segy_normalizer(reader, predictor.meta))
    return entry


def _slab_task(token: str, model, options: dict, path: str, partial: str, step: tuple[int, int, int, int]) -> dict:
    """Predict inlines ``start:stop`` of the survey (reading ``lo:hi``) and write their traces into ``partial``."""
    import torch

    from leanseg.cluster import peak_rss_mb, where
    from leanseg.stitch import SlabStitcher

    start_time = time.perf_counter()
    predictor = _worker_predictor(token, model, options)
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
    return {"seconds": time.perf_counter() - start_time, "worker": where(), "peak_mb": peak_rss_mb()}


def _worker_predictor(token: str, model, options: dict) -> Predictor:
    from leanseg.cluster import worker_cached

    return worker_cached(token, lambda: Predictor(model, **options))


def _worker_load(token: str, model, options: dict) -> None:
    _worker_predictor(token, model, options)


def predict_segy_on_cluster(client, model, options: dict, path: Path, output: Path, slab_halo: tuple, window=None,
                 progress: bool = True) -> dict[str, float]:
    """Predict the SEG-Y cube ``path`` slab by slab on the cluster's workers into ``output`` (.sgy); equal, trace
    for trace and header for header, to ``leanseg.predict``'s stream. Returns each worker's peak memory (MB)."""
    from tqdm.auto import tqdm

    from leanseg.cluster import error_line, prepare, until_done
    from leanseg.stitch import plan_slabs

    path, output = Path(path).absolute(), Path(output).absolute()
    if kind_of(output) != "segy":
        raise LeanSegError(f"{output}: over Dask workers a SEG-Y prediction is written as SEG-Y (.sgy)")
    check_output(output, [path])
    options = {**options, "window": window, "progress": False}
    token, model = prepare(client, model, options, _worker_load)
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
        until_done(client, set(futures), finish, lambda left: failed.extend(futures[f][0] for f in left))
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
    predictor = _worker_predictor(token, model, options)
    return window_for(predictor.meta, predictor.window, 3)
