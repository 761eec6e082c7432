"""What a method receives: labelled example sets (in memory or backed by a dataset) and the task."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .config import ConfigError


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor        # observed (possibly noisy) labels
    idx: torch.Tensor      # positions in the ExampleSet the batch came from
    y_true: torch.Tensor   # clean labels (equal to y without label noise)

    def to(self, device) -> "Batch":
        return Batch(self.x.to(device, non_blocking=True), self.y.to(device), self.idx.to(device),
                     self.y_true.to(device))


class _Items(Dataset):
    """Loads the inputs of selected positions of a source dataset (labels live in the ExampleSet)."""

    def __init__(self, source: Dataset, positions: np.ndarray):
        self.source, self.positions = source, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        item = self.source[int(self.positions[i])]
        return (item[0] if isinstance(item, (tuple, list)) else item), i


class ExampleSet:
    """Examples with observed labels, true labels, optional groups and stable global ids.

    Inputs are either one tensor `x` (small data, batched by slicing) or a `source` dataset whose
    item `p` is `(input, ...)`, with `positions` selecting its items (large data, a DataLoader).
    `eval_source` optionally gives the same items with evaluation transforms.
    """

    def __init__(self, labels, *, x: torch.Tensor | None = None, source: Dataset | None = None,
                 positions=None, eval_source: Dataset | None = None, true_labels=None,
                 groups=None, ids=None, metadata: torch.Tensor | None = None):
        if (x is None) == (source is None):
            raise ValueError("ExampleSet needs exactly one of x (tensor) or source (dataset)")
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        n = len(self.labels)
        self.x = x
        self.source, self.eval_source = source, eval_source
        self.positions = np.arange(n) if positions is None else np.asarray(positions)
        self.true_labels = self.labels.clone() if true_labels is None else torch.as_tensor(true_labels, dtype=torch.long)
        self.groups = None if groups is None else torch.as_tensor(groups, dtype=torch.long)
        self.ids = torch.arange(n) if ids is None else torch.as_tensor(ids, dtype=torch.long)
        self.metadata = metadata
        if x is not None and len(x) != n:
            raise ValueError(f"x has {len(x)} rows but there are {n} labels")
        for name in ("true_labels", "ids", "groups"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"{name} has {len(v)} entries but there are {n} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.x is not None

    def subset(self, idx) -> "ExampleSet":
        """The examples at positions `idx` (global ids are kept)."""
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        idx_np = idx_t.numpy()
        return ExampleSet(
            self.labels[idx_t], x=None if self.x is None else self.x[idx_t],
            source=self.source, positions=None if self.source is None else self.positions[idx_np],
            eval_source=self.eval_source, true_labels=self.true_labels[idx_t],
            groups=None if self.groups is None else self.groups[idx_t], ids=self.ids[idx_t],
            metadata=None if self.metadata is None else self.metadata[idx_t])

    def with_labels(self, labels) -> "ExampleSet":
        """Same examples, observed labels replaced (true labels kept)."""
        out = self.subset(torch.arange(len(self)))
        out.labels = torch.as_tensor(labels, dtype=torch.long).clone()
        return out

    @staticmethod
    def concat(a: "ExampleSet", b: "ExampleSet") -> "ExampleSet":
        """Pool two sets of the same storage kind (e.g. train + official val)."""
        if a.in_memory != b.in_memory or (not a.in_memory and a.source is not b.source):
            raise ValueError("can only pool sets that share their storage")
        cat = torch.cat
        return ExampleSet(
            cat([a.labels, b.labels]), x=cat([a.x, b.x]) if a.in_memory else None,
            source=a.source, positions=None if a.in_memory else np.concatenate([a.positions, b.positions]),
            eval_source=a.eval_source, true_labels=cat([a.true_labels, b.true_labels]),
            groups=None if a.groups is None or b.groups is None else cat([a.groups, b.groups]),
            ids=cat([a.ids, b.ids]),
            metadata=None if a.metadata is None or b.metadata is None else cat([a.metadata, b.metadata]))

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False, train: bool = True, num_workers: int = 0) -> Iterator[Batch]:
        """One pass over the set in batches; `train=False` uses evaluation transforms."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if self.in_memory:
            stop = n - n % batch_size if drop_last and n >= batch_size else n
            for s in range(0, stop, batch_size):
                i = order[s:s + batch_size]
                yield Batch(self.x[i], self.labels[i], i, self.true_labels[i])
            return
        src = self.source if train or self.eval_source is None else self.eval_source
        loader = DataLoader(_Items(src, self.positions), batch_size=batch_size, num_workers=num_workers,
                            sampler=order.tolist(), drop_last=drop_last and n >= batch_size)
        for x, i in loader:
            yield Batch(x, self.labels[i], i, self.true_labels[i])

    def class_counts(self, num_classes: int, true: bool = False) -> torch.Tensor:
        return torch.bincount(self.true_labels if true else self.labels, minlength=num_classes)


def forever(examples: ExampleSet, batch_size: int, generator: torch.Generator, **kw) -> Iterator[Batch]:
    """An endless shuffled stream of batches (a persistent meta/validation iterator)."""
    if len(examples) == 0:
        raise ValueError("cannot draw batches from an empty example set")
    while True:
        yield from examples.batches(min(batch_size, len(examples)), shuffle=True, generator=generator, **kw)


@dataclass
class TaskData:
    """Everything a method gets about its data: splits, class count and an optional official evaluator."""
    name: str
    train: ExampleSet
    test: ExampleSet
    num_classes: int
    input_shape: tuple
    val: ExampleSet | None = None
    extra_tests: dict[str, ExampleSet] = field(default_factory=dict)
    # evaluator(split_name, preds, examples) -> extra metrics (e.g. WILDS' official dataset.eval)
    evaluator: Callable[[str, torch.Tensor, ExampleSet], dict[str, float]] | None = None
    info: dict[str, Any] = field(default_factory=dict)   # realised noise rate, class counts, ...

    def pool(self) -> ExampleSet:
        """The pool S = train + official val (train alone when there is no val split)."""
        if self.val is None or len(self.val) == 0:
            return self.train
        try:
            return ExampleSet.concat(self.train, self.val)
        except ValueError as exc:
            raise ConfigError(f"dataset: pooling train and val of {self.name!r} needs one storage ({exc})") from None

    def eval_splits(self) -> dict[str, ExampleSet]:
        out = {"test": self.test}
        if self.val is not None:
            out["val"] = self.val
        out.update(self.extra_tests)
        return out
