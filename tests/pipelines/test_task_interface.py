"""Every registered task against the written interface (leanseg.tasks.Task), and the places where copies of one job
used to disagree: validation vs. predict, seg2d colour images, BraTS label conventions."""

import dataclasses
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from leanseg.checkpoint import CheckpointMeta
from leanseg.labels import LabelManager
from leanseg.tasks import Task, TaskConfig, available, get_task, task_class

DATA = Path(os.environ.get("LEANSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
REQUIRED = ("discover", "synthetic", "transforms", "loss")


@pytest.mark.parametrize("name", available())
def test_every_task_implements_the_interface(name):
    cls = task_class(name)
    assert issubclass(cls, Task) and cls.name == name
    assert issubclass(cls.Config, TaskConfig) and dataclasses.is_dataclass(cls.Config)
    missing = [m for m in REQUIRED if getattr(cls, m) is getattr(Task, m)]
    assert not missing, f"task {name} does not implement {missing}"
    task = cls(synthetic_size=32)
    manager = task.label_manager
    assert isinstance(manager, LabelManager) and manager.num_outputs >= 2 or manager.sigmoid
    meta = CheckpointMeta.from_json({"model": "lean_unet", "model_kwargs": {}, **task.checkpoint_fields()})
    assert meta.task == name and meta.label_manager == manager and len(meta.channels) == len(task.config.channels)
    # a synthetic case goes through the validation transforms into what the label manager describes
    case = task.transforms(train=False)(task.synthetic(1, seed=0)[0])
    assert case["image"].shape[0] == len(task.config.channels)
    if name != "cifar":  # classification: one label per image
        target = torch.as_tensor(case["label"])[None]
        assert manager.target_masks(target).shape[1] == manager.num_outputs
        assert case["label"].shape[1:] == case["image"].shape[1:]


def test_validation_scores_what_predict_and_evaluate_score(tmp_path):
    """Task.evaluate (what picks the best checkpoint) equals leanseg.predict + leanseg.metrics.evaluate on files."""
    from leanseg.checkpoint import save_model
    from leanseg.metrics import evaluate
    from leanseg.prediction import predict

    task = get_task("brats", synthetic_size=32, window=(32, 32, 32), hd95=False)
    torch.manual_seed(0)
    model = task.model(features=(4, 8)).eval()
    with torch.no_grad():  # a non-trivial prediction from an untrained net: push the region logits apart
        model.head.bias.copy_(torch.tensor([0.5, 0.0, -0.2]))
    case = task.synthetic(1, seed=3)[0]
    loaded = task.transforms(train=False)(case)
    batch = {"image": loaded["image"][None], "label": loaded["label"][None]}
    scores = task.evaluate(model, [batch], torch.device("cpu"))

    # the same case as files: the phantom's background is 0 like a skull-stripped scan
    files = []
    for i, channel in enumerate(case["image"]):
        files.append(tmp_path / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(channel, np.eye(4)), files[-1])
    nib.save(nib.Nifti1Image(case["label"].astype(np.uint8), np.eye(4)), tmp_path / "ref.nii.gz")
    ckpt = save_model(model, tmp_path / "m.safetensors", **task.checkpoint_fields())
    pred = predict(files, ckpt, output=tmp_path / "pred.nii.gz", progress=False)
    by_file = evaluate(pred, tmp_path / "ref.nii.gz", labels=task.label_manager)
    # both crop to the box of non-zero voxels, z-score it and slide the same windows: the same Dice
    for region in ("WT", "TC", "ET"):
        assert scores[f"dice_{region}"] == pytest.approx(by_file[region]["dice"], abs=1e-4), region
    assert 0.05 < scores["dice_WT"] < 0.95  # a prediction that is neither empty nor perfect


def test_brats_conventions_map_to_one_set_of_regions():
    from pipelines.brats import CONVENTIONS, REGIONS

    manager = LabelManager(regions=REGIONS)
    # necrosis, edema, non-enhancing (BraTS 2015), enhancing in each convention's own numbering
    own = {"brats2021": [1, 2, None, 4], "brats2023": [1, 2, None, 3], "msd": [None, 1, 2, 3]}
    expected = {1: [1, 1, 0], 2: [1, 0, 0], 3: [1, 1, 0], 4: [1, 1, 1]}  # WT, TC, ET of each BraTS 2015 value
    for name, values in own.items():
        for brats, value in zip((1, 2, 3, 4), values, strict=True):
            if value is None:
                continue
            label = CONVENTIONS[name].canonical(np.array([value]), name)
            assert manager.masks(label)[:, 0].astype(int).tolist() == expected[brats], (name, value)


def test_evaluate_with_the_brats_task_counts_the_2015_non_enhancing_label():
    if not DATA.is_dir():
        pytest.skip(f"{DATA} (shared test data) is absent")
    from leanseg.metrics import evaluate

    def task_labels(name):
        return get_task(name).label_manager

    ref = DATA / "nifti/brats2015_deepmedic/brats_2013_pat0006_1/OTMultiClass.nii.gz"
    scores = evaluate(ref, ref, labels=task_labels("brats"))
    assert set(scores) == {"WT", "TC", "ET"} and all(s["dice"] == 1.0 for s in scores.values())
    label = np.asarray(nib.load(ref).dataobj)
    assert (label == 3).any()  # the case has non-enhancing tumour, which TC and WT now include
    assert task_labels("brats").masks(label)[1].sum() == np.isin(label, (1, 3, 4)).sum()


def test_seg2d_colour_images_train_and_predict_with_the_same_channels(tmp_path):
    """A colour image trains a 3-channel model, and predict reads it the same way (they used to disagree)."""
    from skimage import io

    from leanseg.prediction import predict
    from leanseg.training import TrainConfig, train

    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(3):
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 6 + i:18 + i] = 255
        colour = np.stack([mask, 255 - mask, rng.integers(0, 255, (32, 32))], -1).astype(np.uint8)
        io.imsave(tmp_path / "data" / "images" / f"{i}.png", colour, check_contrast=False)
        io.imsave(tmp_path / "data" / "masks" / f"{i}.png", mask, check_contrast=False)
    result = train("seg2d", data=tmp_path / "data", config=TrainConfig(out=tmp_path / "run", progress=False),
                   epochs=1, window=(32, 32), model_kwargs={"features": (4, 8)}, batch_size=2, samples_per_case=1)
    assert result.model.encoder[0].down.conv.in_channels == 3
    out = predict(tmp_path / "data" / "images" / "0.png", tmp_path / "run" / "last.safetensors",
                  output=tmp_path / "pred.png", progress=False)
    assert set(np.unique(io.imread(out)).tolist()) <= {0, 255}
