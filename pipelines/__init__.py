"""leanseg's built-in tasks, one module each (data discovery, labels, transforms, loss, defaults).

``TASKS`` is what the ``leanseg.tasks`` entry point of pyproject.toml names: a torch-free table from task name to
its ``leanseg.tasks.Task`` subclass and a one-line description, so ``leanseg --help`` lists the tasks without
importing any of them. leanseg finds tasks only through that entry point (``leanseg.tasks.get_task``); it never
imports this package.
"""

TASKS: dict[str, tuple[str, str]] = {
    "brats": ("pipelines.brats:BratsTask", "brain tumour MRI (BraTS 2020/2021/2023, MSD Task01): WT/TC/ET regions"),
    "faults": ("pipelines.faults:FaultsTask", "binary fault segmentation of 3D seismic cubes (FaultSeg3D-style)"),
    "seg2d": ("pipelines.seg2d:Seg2dTask", "2D segmentation from a folder of images and masks with matching names"),
    "dataset": ("pipelines.dataset:DatasetTask", "any folder with a dataset.json (MSD or nnU-Net v2): planned from "
                "its fingerprint"),
    "cifar": ("pipelines.cifar:CifarTask", "CIFAR-10/100 classification with the paper's LeanResNet"),
}
