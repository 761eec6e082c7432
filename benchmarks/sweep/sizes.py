"""How many examples each split of a sweep's dataset holds, for the cost estimate, without reading the data:
official split sizes of the large datasets, cut the way their options cut them; small datasets are loaded
(they are in memory in a second). Sizes are (train, val, test, selection, extra tests) after the selection
hold-out, plus the image side and whether the data is file-backed.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from torchvision.datasets.folder import IMG_EXTENSIONS

# official split sizes: name -> {split: images}; "val" = the split used as validation when the dataset has one
OFFICIAL = {
    "imagenet": {"train": 1_281_167, "test": 50_000},
    "clothing1m": {"train": 1_000_000, "val": 14_313, "test": 10_526},
    "cifar10": {"train": 50_000, "test": 10_000}, "cifar100": {"train": 50_000, "test": 10_000},
    "camelyon17": {"train": 302_436, "val": 34_904, "test": 85_054, "id_val": 33_560},
    "iwildcam": {"train": 129_809, "val": 14_961, "test": 42_791, "id_val": 7_314, "id_test": 8_154},
    "waterbirds": {"train": 4_795, "val": 1_199, "test": 5_794},
}
CLASSES = {"imagenet": 1000, "clothing1m": 14, "cifar10": 10, "cifar100": 100, "camelyon17": 2, "iwildcam": 182,
           "waterbirds": 2}
KNOWN_EXTRA = {"imagenet_r": 30_000, "imagenet_a": 7_500}   # ImageNet-R / -A, when their folders are not here
SOURCE = ("official split sizes (ImageNet-1K, Clothing-1M, CIFAR, WILDS v2) cut by the sweep's options; "
          "small datasets loaded")


@dataclass
class Sizes:
    train: int
    test: int
    val: int = 0
    selection: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    input_shape: tuple = (3, 224, 224)
    num_classes: int = 10
    file_backed: bool = False
    load_s: float = 0.0          # seconds the driver took to load it (small datasets)

    @property
    def image_size(self) -> int | None:
        return self.input_shape[-1] if len(self.input_shape) == 3 else None

    @property
    def pool(self) -> int:
        return self.train + self.val


def _count_images(folder: str) -> int | None:
    if not os.path.isdir(folder):
        return None
    return sum(f.lower().endswith(IMG_EXTENSIONS) for _, _, files in os.walk(folder) for f in files)


def _official(name: str, o) -> Sizes:
    sz = dict(OFFICIAL[name])
    train, test = sz.pop("train"), sz.pop("test")
    if name == "clothing1m" and getattr(o, "train_subset", None):
        train = min(train, o.train_subset)
    val = sz.pop("val", 0)
    split = getattr(o, "val_split", "val")
    if val and split != "val" and split in sz:             # WILDS: another official split is the validation
        sz["ood_val"], val = val, sz.pop(split)
    extra = dict(sz)
    for key, path in getattr(o, "extra_tests", {}).items():
        extra[key] = _count_images(path) or next((n for k, n in KNOWN_EXTRA.items() if k in key.lower()), 0)
    if getattr(o, "val_source", None):                      # val carved out of an extra test set
        val = round(extra[o.val_source] * o.val_source_fraction)
        extra[o.val_source] -= val
    elif getattr(o, "val_fraction", 0) and not val:         # a stratified hold-out of train
        val = round(train * o.val_fraction)
        train -= val
    selection = round(train * o.selection_fraction)
    side = getattr(o, "image_size", 224)
    return Sizes(train - selection, test, val, selection, extra, (3, side, side), CLASSES[name], True)


def split_sizes(dataset) -> Sizes:
    """Sizes of a sweep's dataset entry (a DatasetConfig); official numbers for the known large datasets,
    else the task loaded (ValueError when it cannot be, e.g. its files are absent)."""
    from benchmarks.data.load import dataset_instance, load_task
    from benchmarks.data.regimes import RegimeConfig
    ds = dataset_instance(dataset)
    if dataset.name in OFFICIAL:
        return _official(dataset.name, ds.options)
    t0 = time.perf_counter()
    try:
        task = load_task(dataset, RegimeConfig(), 0)
    except (OSError, ValueError) as exc:
        raise ValueError(f"dataset {dataset.name!r}: sizes unknown ({type(exc).__name__})") from None
    return Sizes(len(task.train), len(task.test), len(task.val) if task.val is not None else 0,
                 len(task.selection) if task.selection is not None else 0,
                 {k: len(v) for k, v in task.extra_tests.items()}, tuple(task.input_shape), task.num_classes,
                 not task.train.in_memory, time.perf_counter() - t0)
