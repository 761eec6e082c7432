"""The one entry point that builds a task: dataset by name, validated options, then the label regime."""
from __future__ import annotations

from pydantic import Field

import benchmarks.data.datasets  # noqa: F401  (registers the built-in datasets)
from benchmarks.data.datasets.common import SELECTION_FRACTION, require_path
from benchmarks.data.regimes import RegimeConfig
from benchmarks.data.splits import carve_selection, label_task  # noqa: F401  (carve_selection: re-exported)
from molere.registry import DATASETS
from molere.config import Strict, validate
from molere.data import TaskData


class DatasetConfig(Strict):
    """Which dataset to load: a registered name, where its files live, and its own options."""
    name: str
    root: str | None = Field(None, description="folder holding the data (datasets with files)")
    options: dict = Field(default_factory=dict, description="the dataset's Options (see `describe`)")


def dataset_instance(dataset: DatasetConfig):
    """The dataset object for `dataset`: the name resolved (UnknownNameError) and options validated."""
    cls = DATASETS.get(dataset.name)
    return cls(validate(cls.Options, dataset.options, prefix="dataset.options"))


def check_dataset(dataset: DatasetConfig) -> None:
    """Validate name and options and check the data is reachable, without loading it.

    Uses the dataset's `check(root)` when it has one, else requires `root` to exist if `needs_root`.
    """
    ds = dataset_instance(dataset)
    if hasattr(ds, "check"):
        ds.check(dataset.root)
    elif getattr(ds, "needs_root", False):
        require_path(dataset.root, dataset.name,
                     getattr(ds, "how_to_get", "set dataset.root to the folder holding the data"))


def val_shift(dataset: DatasetConfig) -> str | None:
    """Why the dataset's validation split is not a random part of its labelled pool (None when it is): the
    dataset object's `val_shift()` (WILDS OOD val, Clothing-1M's clean val, an ImageNet extra set)."""
    return _shift(dataset_instance(dataset))


def has_val(dataset: DatasetConfig) -> bool:
    """Whether the dataset gives a validation split (known before loading: its options or `has_val()`)."""
    ds = dataset_instance(dataset)
    if hasattr(ds, "has_val"):
        return bool(ds.has_val())
    return _shift(ds) is not None or getattr(getattr(ds, "options", None), "val_fraction", 0) > 0


def _shift(ds) -> str | None:
    return ds.val_shift() if hasattr(ds, "val_shift") else None


def load_task(dataset: DatasetConfig, regime: RegimeConfig, seed: int, data_config: dict | None = None) -> TaskData:
    """Load `dataset` for trial `seed` and label it (`benchmarks.data.splits.label_task`: the regime, seeded by the
    trial seed, over the labelled pool or the training split, then the selection and val splits); `data_config`
    (a pretrained model's timm data config) sets the image transforms of image datasets."""
    ds = dataset_instance(dataset)
    if data_config is not None and hasattr(ds, "transforms"):
        ds.data_config = data_config
    opts = getattr(ds, "options", None)
    return label_task(ds.load(dataset.root, seed), regime, seed,
                      selection_fraction=getattr(opts, "selection_fraction", SELECTION_FRACTION),
                      split_seed=getattr(opts, "split_seed", 0), val_shift=_shift(ds))
