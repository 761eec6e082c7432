"""The one entry point that builds a task: dataset by name, validated options, then the label regime."""
from __future__ import annotations

import dataclasses

from pydantic import Field

import benchmarks.datasets  # noqa: F401  (registers the built-in datasets)
from benchmarks.datasets.common import SELECTION_FRACTION, require_path, stratified_split
from benchmarks.regimes import RegimeConfig, apply_regime
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


SELECTION_STREAM = 11   # RNG stream of the selection split (independent of the regimes' streams)


def carve_selection(task: TaskData, fraction: float, seed: int, split_seed: int = 0) -> TaskData:
    """Hold `fraction` of every observed class of `task.train` out as `task.selection` (never trained on).

    Carved after the label regime, so it carries the observed (possibly noisy) labels and the long tail a
    user would have; seeded by (split_seed, trial seed), hence the same for every method and draw of one
    (dataset, regime, seed). `info` gains its size and noise rate; the train counts are recomputed."""
    if fraction <= 0 or len(task.train) == 0:
        return task
    rest, held = stratified_split(task.train.labels.numpy(), fraction, [split_seed, seed, SELECTION_STREAM])
    if len(held) == 0:
        return task
    train, selection = task.train.subset(rest), task.train.subset(held)
    info = dict(task.info, selection_size=len(selection),
                selection_noise_rate=float((selection.labels != selection.true_labels).float().mean()),
                train_class_counts=train.class_counts(task.num_classes).tolist(),
                train_noise_rate=float((train.labels != train.true_labels).float().mean()) if len(train) else 0.0)
    return dataclasses.replace(task, train=train, selection=selection, info=info)


def load_task(dataset: DatasetConfig, regime: RegimeConfig, seed: int) -> TaskData:
    """Load `dataset` for trial `seed`, apply the label regime (seeded by the same trial seed) and carve the
    model-selection split (`selection_fraction`) out of the training split before any method sees it."""
    ds = _dataset(dataset)
    task = apply_regime(ds.load(dataset.root, seed), regime, seed)
    opts = getattr(ds, "options", None)
    return carve_selection(task, getattr(opts, "selection_fraction", SELECTION_FRACTION), seed,
                           getattr(opts, "split_seed", 0))
