"""``leanseg.predict``: files in, label map (and optionally probabilities and a preview) out.

NIfTI files, case folders and images are predicted in memory (a brain volume is a few hundred MB at most);
SEG-Y cubes always stream slab by slab along the inline axis, so their size is bounded by the disk, not RAM.
(The module is not called ``predict`` because the package attribute ``leanseg.predict`` is this function.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from leanseg.checkpoint import CheckpointMeta
from leanseg.errors import LeanSegError
from leanseg.io import (
    SegyReader,
    SegyWriter,
    atomic_path,
    check_output,
    find_case_files,
    full_suffix,
    kind_of,
    read_volume,
    stem,
    write_nifti,
    write_volume,
)
from leanseg.preview import OrthoSlices

_DEFAULT_SUFFIX = {"nifti": None, "folder": ".nii.gz", "segy": ".sgy", "image": ".png"}


def default_output(first_input: str | os.PathLike) -> Path:
    """Beside the input, named after it: ``a.nii.gz`` -> ``a_pred.nii.gz``, ``case/`` -> ``case_pred.nii.gz``."""
    path = Path(first_input)
    kind = kind_of(path)
    if kind == "folder":
        return path.parent / f"{path.name}_pred.nii.gz"
    return path.parent / f"{stem(path)}_pred{_DEFAULT_SUFFIX.get(kind) or full_suffix(path)}"


def _sibling(output: Path, tag: str, suffix: str | None = None) -> Path:
    return output.parent / f"{stem(output)}_{tag}{suffix or full_suffix(output)}"


def resolve_device(device: str):
    """'cpu' (the default), 'cuda' (an error when there is none) or 'auto' (cuda when there is one)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LeanSegError(f"--device {device}: no CUDA device is available; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise LeanSegError(f"--device {device!r}: expected cpu, cuda, cuda:N or auto") from None


def _apply(norm, array: np.ndarray) -> np.ndarray:
    return array if norm is None else np.asarray(norm(array), dtype=np.float32)


def _checkpoint(model) -> tuple[Any, CheckpointMeta]:
    """(network, meta) from a checkpoint path or a (network, meta) pair whose meta is a CheckpointMeta or its JSON."""
    from leanseg.checkpoint import load_model

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
            slab: int | None = None, halo: int | None = None, progress: bool = True) -> Path:
    """Predict a volume and write its label map; returns the label map's path.

    Args:
        inputs: a NIfTI file (3D, or 4D with channels last), several NIfTI files (one per channel, in the
            checkpoint's channel order), a case folder (files found by the checkpoint's channel names), a SEG-Y
            cube or a 2D image.
        model: a checkpoint path (``leanseg.save_model``), a zoo name (``leanseg models --pretrained``) or a
            ``(model, meta)`` pair as ``leanseg.load_model`` returns it. None: the ``best.safetensors`` that
            ``leanseg train`` last wrote to runs/leanseg when it fits the input, else the zoo model for the input's
            kind (``leanseg.zoo.default_model``); which one is said on stderr.
        output: the label map; its suffix picks the format (.nii/.nii.gz, .sgy/.segy, .npy, .png/.tif). Default:
            beside the first input, named after it with ``_pred``. Probabilities go to ``<output>_probs`` and
            the preview to ``<output>_preview.png``.
        window: sliding-window size (default: the checkpoint's ``window``, else 128 per axis).
        overlap, tta, batch_size: see ``leanseg.inference.sliding_window_predict``.
        device: "cpu" (default), "cuda" or "auto". amp: float16 autocast, on CUDA only.
        slab, halo: SEG-Y streaming: inlines written per step and inlines of context read on each side (default:
            the window less two halos; an eighth of the window), see ``leanseg.inference.predict_streaming``.
    """
    inputs = [Path(inputs)] if isinstance(inputs, str | os.PathLike) else [Path(p) for p in inputs]
    if not inputs:
        raise LeanSegError("no input given")
    if model is None:  # the last trained model that fits, else the zoo's for this kind of input
        from leanseg.zoo import default_model

        model, why = default_model(inputs)
        print(f"leanseg: {why}", file=sys.stderr)
    net, meta = _checkpoint(model)
    dev = resolve_device(device)
    output = Path(output) if output is not None else default_output(inputs[0])
    kind = kind_of(inputs[0])
    sources = list(inputs)
    if kind == "folder":
        sources = find_case_files(inputs[0], meta.channels)
    outputs = [output] + ([_sibling(output, "probs", ".npy" if kind in ("segy", "image") else None)] if probabilities
                          else []) + ([_sibling(output, "preview", ".png")] if preview else [])
    for out in outputs:
        check_output(out, sources)
    labels = meta.label_manager
    in_channels = meta.in_channels
    options = dict(overlap=overlap, tta=tta, batch_size=batch_size, activation=labels.activation, device=dev,
                   amp=amp)
    net = net.to(dev)
    if kind == "segy":
        if len(inputs) > 1:
            raise LeanSegError(f"{inputs[1]}: a SEG-Y cube is one file; give one input")
        _predict_segy(inputs[0], net, meta, outputs, window, (slab, halo), options, progress)
        return output
    array, geometry = read_volume(sources)
    where = ", ".join(str(p) for p in sources)
    if in_channels is not None and array.shape[0] != in_channels:
        raise LeanSegError(f"{where}: {array.shape[0]} channel(s) but the checkpoint expects {in_channels}"
                           f" ({', '.join(meta.channels)})")
    if meta.spatial_dims not in (None, array.ndim - 1):
        raise LeanSegError(f"{where}: a {array.ndim - 1}D input for a {meta.spatial_dims}D model")
    probs = _predict_array(net, _apply(meta.normalization.transform(), array), meta, window, options, progress)
    label_map = labels.decode(probs)
    write_volume(output, label_map, geometry)
    if probabilities:
        write_volume(outputs[1], probs.numpy(), geometry)
    if preview:
        slices = OrthoSlices(label_map.shape)
        slices.add(0, array[0], label_map)
        slices.save(outputs[-1])
    return output


def _window(meta: CheckpointMeta, window, ndim: int):
    window = window or meta.window or 128
    return (window,) * ndim if isinstance(window, int) else tuple(window)


def _predict_array(net, array: np.ndarray, meta: CheckpointMeta, window, options: dict, progress: bool):
    import torch

    from leanseg.inference import sliding_window_predict

    x = torch.from_numpy(array)[None]
    return sliding_window_predict(net, x, _window(meta, window, array.ndim - 1), progress=progress, **options)[0]


def _predict_segy(path: Path, net, meta: CheckpointMeta, outputs: list[Path], window, slab_halo, options: dict,
                  progress: bool) -> None:
    """Stream a SEG-Y cube: read inline slabs lazily, write labels (and probabilities) slab by slab."""
    from leanseg.inference import predict_streaming

    output = outputs[0]
    kind = kind_of(output)
    if kind not in ("segy", "npy", "nifti"):
        raise LeanSegError(f"{output}: a SEG-Y prediction is written as .sgy, .npy or NIfTI")
    with SegyReader(path) as reader, ExitStack() as stack:
        geometry = reader.geometry
        if meta.in_channels not in (None, 1):
            raise LeanSegError(f"{path}: a SEG-Y cube has 1 channel but the checkpoint expects {meta.in_channels}")
        decoder = meta.label_manager
        # normalisation statistics from 16 inlines spread over the cube: one lazy pass would cost a full read
        picks = np.unique(np.linspace(0, reader.shape[0] - 1, 16).astype(int))
        norm = meta.normalization.transform(stats_from=np.stack([reader.read(i, i + 1)[0] for i in picks])[None])
        live = geometry.live
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

        predict_streaming(net, read, reader.shape[0], write, _window(meta, window, 3), *slab_halo, progress=progress,
                          **options)
    if kind == "nifti":
        write_nifti(output, labels_out, None, geometry.spacing)
    if slices is not None:
        slices.save(outputs[-1])
