"""The one entry point that builds a task: dataset by name, validated options, then the label regime."""
from __future__ import annotations

import dataclasses

from pydantic import Field

import benchmarks.data.datasets  # noqa: F401  (registers the built-in datasets)
from benchmarks.data.datasets.common import SELECTION_FRACTION, require_path, stratified_split
from benchmarks.data.regimes import RegimeConfig, apply_regime
from benchmarks.registry import DATASETS
from molere.config import Strict, validate
from molere.data import TaskData


class DatasetConfig(Strict):
    """Which dataset to load: a registered name, where its files live, and its own options."""
    name: str
    root: str | None = Field(None, description="folder holding the data (datasets with files)")
    options: dict = Field(default_factory=dict, description="the dataset's Options (see `describe`)")


def _dataset(dataset: DatasetConfig):
    """The dataset object for `dataset`: the name resolved (UnknownNameError) and options validated."""
    cls = DATASETS.get(dataset.name)
    return cls(validate(cls.Options, dataset.options, prefix="dataset.options"))


def check_dataset(dataset: DatasetConfig) -> None:
    """Validate name and options and check the data is reachable, without loading it.

    Uses the dataset's `check(root)` when it has one, else requires `root` to exist if `needs_root`.
    """
    ds = _dataset(dataset)
    if hasattr(ds, "check"):
        ds.check(dataset.root)
    elif getattr(ds, "needs_root", False):
        require_path(dataset.root, dataset.name,
                     getattr(ds, "how_to_get", "set dataset.root to the folder holding the data"))


SELECTION_STREAM = 11   # RNG stream of the selection split (independent of the datasets' own splits)


def carve_selection(task: TaskData, fraction: float, split_seed: int = 0) -> TaskData:
    """Hold `fraction` of every class of `task.train` out as `task.selection` (never trained on by any method).

    Seeded by the dataset's split seed only, like its val split: the same examples for every trial seed,
    method and draw. Carved before the label regime, which then treats it like val (noise: observed labels
    corrupted, truth kept; long tail: train only)."""
    if fraction <= 0 or len(task.train) == 0:
        return task
    rest, held = stratified_split(task.train.labels.numpy(), fraction, [split_seed, SELECTION_STREAM])
    if len(held) == 0:
        return task
    selection = task.train.subset(held)
    return dataclasses.replace(task, train=task.train.subset(rest), selection=selection,
                               info=dict(task.info, selection_size=len(selection)))


def load_task(dataset: DatasetConfig, regime: RegimeConfig, seed: int, data_config: dict | None = None) -> TaskData:
    """Load `dataset` for trial `seed`, carve the model-selection split (`selection_fraction`) out of its
    training split, then apply the label regime (seeded by the same trial seed); `data_config` (a pretrained
    model's timm data config) sets the image transforms of image datasets."""
    ds = _dataset(dataset)
    if data_config is not None and hasattr(ds, "transforms"):
        ds.data_config = data_config
    opts = getattr(ds, "options", None)
    task = carve_selection(ds.load(dataset.root, seed), getattr(opts, "selection_fraction", SELECTION_FRACTION),
                           getattr(opts, "split_seed", 0))
    return apply_regime(task, regime, seed)
