"""The labelled data of a trial: the label regime over the labelled pool, then the selection and val splits.

When the dataset's validation split is a random part of its labelled pool (`val_shift` None) and the
regime says `val: pool` (default), the regime applies to the pool P = train + val first; the selection
split (`selection_fraction` of P) and then the validation split (the dataset's own share f of the rest)
are drawn from it. Val and selection then follow the training distribution, and a δ = f split of
train + val has exactly ERM's training size. Otherwise (a val split that is another distribution by
definition: WILDS OOD val, Clothing-1M's clean val, an ImageNet extra set, or `val: kept`) the regime
applies to the training split only, the selection split is carved from it, and val stays as given.
Both splits are per class (true labels) and seeded by the dataset's split seed. Why: docs/model_selection.md.
"""
from __future__ import annotations

import dataclasses

from benchmarks.data.regimes import RegimeConfig, regime_on
from molere.data import ExampleSet, TaskData
from molere.splits import stratified_split

SELECTION_STREAM, VAL_STREAM = 11, 12   # RNG streams of the two splits (independent of the datasets' own)


def _carve(examples: ExampleSet, fraction: float, seed: list[int]) -> tuple[ExampleSet, ExampleSet | None]:
    """(rest, held): `fraction` of every true class held out, reproducibly (held is None when empty)."""
    if fraction <= 0 or len(examples) == 0:
        return examples, None
    rest, held = stratified_split(examples.true_labels.numpy(), fraction, seed)
    return (examples, None) if len(held) == 0 else (examples.subset(rest), examples.subset(held))


def carve_selection(task: TaskData, fraction: float, split_seed: int = 0) -> TaskData:
    """Hold `fraction` of every class of `task.train` out as `task.selection` (never trained on by any method)."""
    train, selection = _carve(task.train, fraction, [split_seed, SELECTION_STREAM])
    if selection is None:
        return task
    return dataclasses.replace(task, train=train, selection=selection,
                               info=dict(task.info, selection_size=len(selection)))


def val_from_pool(task: TaskData, val_shift: str | None, regime: RegimeConfig) -> bool:
    """Whether the regime applies to train + val before val is drawn (val follows the training distribution)."""
    return val_shift is None and regime.val == "pool" and task.val is not None and len(task.val) > 0


def label_task(task: TaskData, regime: RegimeConfig, seed: int, *, selection_fraction: float = 0.0,
               split_seed: int = 0, val_shift: str | None = None) -> TaskData:
    """The task a trial trains on: the regime applied (seeded by the trial seed), the selection split carved,
    val drawn after the regime when it comes from the labelled pool (module docstring)."""
    C = task.num_classes
    if val_from_pool(task, val_shift, regime):
        share = len(task.val) / (len(task.train) + len(task.val))
        pool = regime_on(task.pool(), regime, C, seed, "pool")
        task = carve_selection(dataclasses.replace(task, train=pool, val=None), selection_fraction, split_seed)
        train, val = _carve(task.train, share, [split_seed, VAL_STREAM])
        task = dataclasses.replace(task, train=train, val=val)
        where = "drawn from the labelled pool after the regime: follows the training distribution"
    else:
        task = dataclasses.replace(task, train=regime_on(task.train, regime, C, seed, "train"))
        task = carve_selection(task, selection_fraction, split_seed)
        where = val_shift or ("kept as the dataset gives it (regime val: kept)" if task.val is not None
                              else "none")
    return dataclasses.replace(task, info=_info(task, regime, where))


def _noise(examples: ExampleSet | None) -> float | None:
    if examples is None or len(examples) == 0:
        return None
    return float((examples.labels != examples.true_labels).float().mean())


def _info(task: TaskData, regime: RegimeConfig, where: str) -> dict:
    """Regime, where val comes from, realised sizes, noise rates and class counts (`task.info`)."""
    C, train = task.num_classes, task.train
    counts = train.class_counts(C)
    size = lambda s: 0 if s is None else len(s)   # noqa: E731
    info = dict(task.info, regime=regime.model_dump(), val_split=where,
                train_noise_rate=_noise(train) or 0.0, train_class_counts=counts.tolist(),
                sizes={"train": len(train), "val": size(task.val), "selection": size(task.selection),
                       "test": len(task.test), **{f"test:{k}": len(v) for k, v in task.extra_tests.items()}})
    for name in ("val", "selection"):
        rate = _noise(getattr(task, name))
        if rate is not None:
            info[f"{name}_noise_rate"] = rate
    if task.val is not None and len(task.val):
        info["val_class_counts"] = task.val.class_counts(C).tolist()
    if regime.kind == "longtail":
        present = counts[counts > 0]
        info["imbalance_ratio"] = float(present.max() / present.min())
    return info


def apply_regime(task: TaskData, regime: RegimeConfig, seed: int, val_shift: str | None = None) -> TaskData:
    """`label_task` without a selection split (the regime and the val split only)."""
    return label_task(task, regime, seed, val_shift=val_shift)

