"""Task registry, case discovery on tiny fake BraTS 2021 / 2023 / MSD folders, synthetic data, CIFAR unpickling."""

import json
import pickle
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from leanseg.errors import LeanSegError
from leanseg.tasks import available, get_task

SHAPE = (6, 7, 5)


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4)), path)


def _label(values):
    """A label map holding each of ``values`` in its own slab along x (background elsewhere)."""
    label = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(values):
        label[i + 1] = v
    return label


def _brats_case(root, case, mods, sep, labels, skip=()):
    for k, m in enumerate(mods):
        if m not in skip:
            _save(root / case / f"{case}{sep}{m}.nii.gz", np.full(SHAPE, k + 1, np.float32))
    if "seg" not in skip:
        _save(root / case / f"{case}{sep}seg.nii.gz", _label(labels))


def test_registry_is_torch_free_and_suggests_names():
    code = "import sys, leanseg.tasks; leanseg.tasks.describe(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    assert available() == ["brats", "cifar", "dataset", "faults", "seg2d"]
    with pytest.raises(LeanSegError, match="did you mean 'brats'"):
        get_task("brat")


@pytest.mark.parametrize("layout, mods, sep, labels, expected", [
    # BraTS 2021: 1 NCR, 2 ED, 4 ET
    ("brats2021", ("t1", "t1ce", "t2", "flair"), "_", (1, 2, 4), {"WT": [1, 1, 1], "TC": [1, 0, 1], "ET": [0, 0, 1]}),
    # BraTS 2023: enhancing is 3
    ("brats2023", ("t1n", "t1c", "t2w", "t2f"), "-", (1, 2, 3), {"WT": [1, 1, 1], "TC": [1, 0, 1], "ET": [0, 0, 1]}),
])
def test_brats_folders(tmp_path, layout, mods, sep, labels, expected):
    brats = get_task("brats")
    case = "BraTS2021_00001" if layout == "brats2021" else "BraTS-GLI-00001-000"
    _brats_case(tmp_path, case, mods, sep, labels)
    (cases,) = brats.discover(tmp_path)
    assert cases["convention"] == layout and cases["id"] == case
    out = brats.transforms(train=False).transforms[0](cases)
    assert [out["image"][c].max() for c in range(4)] == [1, 2, 3, 4]  # files in t1, t1ce, t2, flair order
    for r, region in enumerate(brats.label_manager.names):
        assert [int(out["label"][r][i + 1].max()) for i in range(3)] == expected[region]


def test_msd_folder_reorders_channels_and_maps_labels(tmp_path):
    brats = get_task("brats")
    modality = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": modality}))
    _save(tmp_path / "imagesTr" / "BRATS_001.nii.gz", np.stack([np.full(SHAPE, k + 1.0) for k in range(4)], -1))
    _save(tmp_path / "labelsTr" / "BRATS_001.nii.gz", _label((1, 2, 3)))  # 1 edema, 2 non-enhancing, 3 enhancing
    _save(tmp_path / "imagesTr" / "._BRATS_001.nii.gz", np.zeros(SHAPE))  # macOS resource file: ignored
    (case,) = brats.discover(tmp_path)
    out = brats.transforms(train=False).transforms[0](case)
    assert [out["image"][c].max() for c in range(4)] == [2, 3, 4, 1]  # T1w, t1gd, T2w, FLAIR
    wt, tc, et = ([int(out["label"][r][i + 1].max()) for i in range(3)] for r in range(3))
    assert (wt, tc, et) == ([1, 1, 1], [0, 1, 1], [0, 0, 1])


def test_discovery_errors_list_missing_files(tmp_path):
    brats = get_task("brats")
    with pytest.raises(LeanSegError, match="no BraTS cases"):
        brats.discover(tmp_path)
    _brats_case(tmp_path, "BraTS2021_00002", ("t1", "t1ce", "t2", "flair"), "_", (1,), skip=("t1ce", "seg"))
    with pytest.raises(LeanSegError, match=r"2 files missing: .*_t1ce.nii.gz, .*_seg.nii.gz"):
        brats.discover(tmp_path)


def test_labels_outside_the_set(tmp_path):
    brats = get_task("brats")
    _brats_case(tmp_path, "BraTS2021_00003", ("t1", "t1ce", "t2", "flair"), "_", (1, 3))  # 3 is not BraTS 2021
    (case,) = brats.discover(tmp_path)
    with pytest.raises(LeanSegError, match=r"label values \[3\]"):
        brats.transforms(train=False).transforms[0](case)


def test_synthetic_data_is_seeded_and_labelled():
    from leanseg import synthetic

    a = synthetic.brats_phantom(np.random.default_rng(3), 32)
    b = synthetic.brats_phantom(np.random.default_rng(3), 32)
    assert np.array_equal(a[0], b[0]) and a[0].shape == (4, 32, 32, 32)
    assert set(np.unique(a[1])) == {0, 1, 2, 4}
    cube, faults = synthetic.seismic_faults(np.random.default_rng(0), 32)
    assert cube.shape == (1, 32, 32, 32) and 0.01 < faults.mean() < 0.3
    image, label = synthetic.shapes2d(np.random.default_rng(0), 48)
    assert image.shape == (1, 48, 48) and set(np.unique(label)) <= {0, 1, 2}


def test_cifar_batches_load_and_code_is_refused(tmp_path):
    cifar = get_task("cifar")
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 9]}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=2))
    cases = cifar.discover(tmp_path)
    assert len(cases) == 24 and sum(c["split"] == "test" for c in cases) == 4
    assert cases[0]["image"].shape == (3, 32, 32)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(LeanSegError, match="refusing to load builtins.print"):
        cifar.discover(tmp_path)
