"""Training's last step when ``TrainConfig(postprocess=True)``: component rules chosen on the validation cases.

(Here rather than in ``leanseg.postprocess``, which ``leanseg.checkpoint`` imports: this step reads and writes
checkpoints.)
"""

from __future__ import annotations

import os

from leanseg.postprocess import select_postprocess


def choose_for_checkpoint(checkpoint: str | os.PathLike, dataset, window, device=None) -> dict:
    """Predict each validation case of ``dataset`` (dicts with "image" and its encoded "label") with the checkpoint
    as ``leanseg predict`` does, choose rules with :func:`select_postprocess` and store them in the checkpoint.
    Returns the rules and the mean Dice before/after."""
    import torch

    from leanseg.checkpoint import load_model, save_model
    from leanseg.inference import sliding_window_predict

    net, meta = load_model(checkpoint)
    labels = meta.label_manager
    device = torch.device(device or "cpu")
    net = net.to(device)
    predictions, references = [], []
    for case in dataset:
        image, target = torch.as_tensor(case["image"])[None], torch.as_tensor(case["label"])[None]
        probs = sliding_window_predict(net, image, window, activation=labels.activation, device=device)[0]
        predictions.append(labels.decode(probs))
        references.append(labels.decode(labels.target_masks(target.cpu())[0]))  # masks decode as probabilities
    rules, scores = select_postprocess(predictions, references, labels)
    save_model(net.cpu(), checkpoint, meta.replace(postprocess=rules))
    return {"postprocess": rules.to_json()} | scores


__all__ = ["choose_for_checkpoint"]
