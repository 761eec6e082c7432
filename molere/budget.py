"""What a trial's classifier saw and did, recorded by the base `Trainer` for every method: realised counts.

- `train` / `train_per_class`: the examples its classifier trains on (observed labels, at construction);
- `meta` / `meta_per_class`: its meta / validation set (0 without one);
- `seen` / `seen_per_class`: the distinct examples either of them holds (what the method learned from);
- `selection`: the model-selection split every method is evaluated on and none trains on;
- `steps_per_epoch`, `steps`: classifier steps per epoch and in all (added when training ends).

The report compares them with the reference each method is measured against (benchmarks.report.like_for_like).
"""
from __future__ import annotations

import numpy as np
import torch

from .data import ExampleSet, TaskData


def steps_per_epoch(data: TaskData, train_set: ExampleSet, batch_size: int, budget: str) -> int:
    """Classifier steps of one epoch: the reference's (one pass of ERM over `data.train`) under the `steps`
    budget, one pass over the method's own training set under `epochs`."""
    n = len(data.train) if budget == "steps" else len(train_set)
    return max(1, -(-n // batch_size))


def _per_class(labels: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(labels, minlength=num_classes).tolist()


def data_counts(data: TaskData, train_set: ExampleSet, meta_set: ExampleSet | None) -> dict:
    """Realised example counts of a method's sets (module docstring)."""
    C = data.num_classes
    meta = meta_set if meta_set is not None and len(meta_set) else None
    ids = train_set.ids if meta is None else torch.cat([train_set.ids, meta.ids])
    labels = train_set.labels if meta is None else torch.cat([train_set.labels, meta.labels])
    _, first = np.unique(ids.numpy(), return_index=True)
    seen = labels[torch.as_tensor(first)]
    return {"train": len(train_set), "train_per_class": _per_class(train_set.labels, C),
            "meta": 0 if meta is None else len(meta),
            "meta_per_class": [0] * C if meta is None else _per_class(meta.labels, C),
            "seen": len(seen), "seen_per_class": _per_class(seen, C),
            "selection": 0 if data.selection is None else len(data.selection)}
