"""What a method receives: labelled example sets (in memory or backed by a dataset) and the task."""
from __future__ import annotations

import os
import random
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import ConfigError


def normalized(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float32 `(x / 255 - mean) / std`: torchvision's ToTensor + Normalize, op for op
    (the same float32 values), run wherever `x` is (on the GPU after a uint8 copy)."""
    shape = (1, -1, 1, 1)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(shape)
    return x.float().div_(255).sub_(m).div_(s)


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor        # observed (possibly noisy) labels
    idx: torch.Tensor      # positions in the ExampleSet the batch came from
    y_true: torch.Tensor   # clean labels (equal to y without label noise)
    normalize: tuple | None = None   # (mean, std) when x is uint8 images normalised on arrival (`to`)

    def to(self, device) -> "Batch":
        """The batch on `device`; uint8 images are copied as uint8 and normalised there."""
        x = self.x.to(device, non_blocking=True)
        if self.normalize is not None:
            x = normalized(x, *self.normalize)
        return Batch(x, self.y.to(device), self.idx.to(device), self.y_true.to(device))


@dataclass(frozen=True)
class Loading:
    """DataLoader settings of every file-backed pass, chosen here only (in-memory sets never use them).

    `num_workers` is the trial's budget of loader processes. The streams that run side by side during
    training (the epoch's batches, meta / validation / splitter / probe batches; `persistent_workers`) share
    it in proportion to the images each decodes per training step (`share`); an evaluation pass, which runs
    while they wait, gets all of it. Batches are pinned for an asynchronous copy when training on CUDA."""
    num_workers: int = 0
    pin_memory: bool = False
    prefetch_factor: int = 2

    @classmethod
    def for_run(cls, num_workers: int | None, device: str = "cpu", cpus: float | None = None) -> "Loading":
        """`num_workers=None`: one worker per CPU the trial was given (Ray's share), one kept for the loop."""
        if num_workers is None:
            if cpus is None:
                cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            num_workers = max(0, int(cpus) - 1)
        return cls(num_workers=num_workers, pin_memory=torch.device(device).type == "cuda")

    def share(self, demand: dict[str, float]) -> dict[str, int]:
        """Workers per concurrent stream from `demand` (images it decodes per training step: batch size /
        steps between draws): `num_workers` split in proportion, at least one each while there are enough
        (largest remainders; the busiest streams first when there are fewer workers than streams)."""
        n, keys = self.num_workers, [k for k, d in demand.items() if d > 0]
        out = {k: 0 for k in demand}
        if n == 0 or not keys:
            return out
        if n < len(keys):
            out.update({k: 1 for k in sorted(keys, key=lambda k: -demand[k])[:n]})
            return out
        total = sum(demand[k] for k in keys)
        quota = {k: n * demand[k] / total for k in keys}
        out.update({k: max(1, int(quota[k])) for k in keys})
        while sum(out.values()) > n:   # the minimum of one pushed it over: take from the best served
            k = max((k for k in keys if out[k] > 1), key=lambda k: out[k] - quota[k])
            out[k] -= 1
        for k in sorted(keys, key=lambda k: out[k] - quota[k])[:n - sum(out.values())]:
            out[k] += 1
        return out

    def kwargs(self, workers: int, persistent: bool = False) -> dict:
        kw: dict[str, Any] = {"num_workers": workers, "pin_memory": self.pin_memory}
        if workers > 0:
            kw.update(prefetch_factor=self.prefetch_factor, persistent_workers=persistent)
        return kw


@contextmanager
def seeded(seed: int):
    """Run the block with torch's CPU, python's and numpy's global RNG seeded by `seed`, restored after."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def pass_seed(*keys: int) -> int:
    """A 62-bit seed derived from integers (a stream's base seed, its name, the pass number)."""
    return int(np.random.SeedSequence([int(k) % 2**63 for k in keys]).generate_state(1, np.uint64)[0] % 2**62)


def name_key(name: str) -> int:
    return zlib.crc32(name.encode())


class _Items(Dataset):
    """Loads the inputs of selected positions of a source dataset (labels live in the ExampleSet).

    A key `(i, seed)` loads item i with every global RNG seeded by `seed`: random augmentations are then
    a function of (pass, position) only — the same with or without workers, and after a resume."""

    def __init__(self, source: Dataset, positions: np.ndarray):
        self.source, self.positions = source, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        if seed is None:
            item = self.source[int(self.positions[i])]
        else:
            with seeded(seed):
                item = self.source[int(self.positions[i])]
        return (item[0] if isinstance(item, (tuple, list)) else item), i


class _Keys(Sampler):
    """The keys of the next pass (set before every `iter(loader)`; a loader with persistent workers
    re-reads them at every new iterator)."""

    def __init__(self):
        self.keys: list = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class _Feed:
    """A DataLoader over a file-backed set whose keys change from pass to pass."""

    def __init__(self, examples: "ExampleSet", batch_size: int, train: bool, loading: Loading, workers: int,
                 persistent: bool):
        src = examples.source if train or examples.eval_source is None else examples.eval_source
        self.examples, self.sampler = examples, _Keys()
        self.loader = DataLoader(_Items(src, examples.positions), batch_size=batch_size, sampler=self.sampler,
                                 generator=torch.Generator().manual_seed(0),   # never draws from the global RNG
                                 **loading.kwargs(workers, persistent))

    def run(self, order: torch.Tensor, first_seed: int | None) -> Iterator["Batch"]:
        pos = order.tolist()
        self.sampler.keys = pos if first_seed is None else [(p, first_seed + j) for j, p in enumerate(pos)]
        ex, norm = self.examples, getattr(self.loader.dataset.source, "normalize", None)
        for x, i in self.loader:
            yield Batch(x, ex.labels[i], i, ex.true_labels[i], norm if x.dtype == torch.uint8 else None)


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
                drop_last: bool = False, train: bool = True, num_workers: int = 0, loading: Loading | None = None,
                order: torch.Tensor | None = None, first_seed: int | None = None) -> Iterator[Batch]:
        """One pass over the set in batches; `train=False` uses evaluation transforms.

        `order` gives the positions to visit (default: shuffled by `generator`, or in order); file-backed
        items are loaded with seed `first_seed + k` for the k-th of them (see `_Items`)."""
        n = len(self)
        if order is None:
            order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if drop_last and len(order) >= batch_size:
            order = order[:len(order) - len(order) % batch_size]
        if self.in_memory:
            for s in range(0, len(order), batch_size):
                i = order[s:s + batch_size]
                yield Batch(self.x[i], self.labels[i], i, self.true_labels[i])
            return
        loading = loading or Loading(num_workers=num_workers)
        yield from _Feed(self, batch_size, train, loading, loading.num_workers, False).run(order, first_seed)

    def class_counts(self, num_classes: int, true: bool = False) -> torch.Tensor:
        return torch.bincount(self.true_labels if true else self.labels, minlength=num_classes)


class Stream:
    """An endless shuffled stream of batches over a set (the training epochs, meta/validation batches).

    Every pass draws a permutation from `generator` when its first batch is asked for. The position
    (this pass's order, its number and the batches drawn from it) is `state_dict()`, so a resumed
    stream continues with the same batches. A file-backed set is read by `workers` persistent workers
    (default: all of `loading.num_workers`; a trainer gives each stream its `Loading.share`), with
    augmentations seeded per (pass, position)."""

    def __init__(self, examples: ExampleSet, batch_size: int, generator: torch.Generator, *, seed: int = 0,
                 loading: Loading | None = None, train: bool = True, workers: int | None = None):
        if len(examples) == 0:
            raise ValueError("cannot draw batches from an empty example set")
        self.examples, self.batch_size = examples, min(batch_size, len(examples))
        self.generator, self.seed, self.train = generator, seed, train
        self.loading = loading or Loading()
        self.workers = self.loading.num_workers if workers is None else workers
        self.order: torch.Tensor | None = None
        self.passes, self.drawn = 0, 0
        self._it: Iterator[Batch] | None = None
        self._feed: _Feed | None = None

    @property
    def batches_per_pass(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def remaining(self) -> int:
        """Batches left in the current pass (0 when it is complete, a full pass before the first)."""
        return self.batches_per_pass if self.order is None else self.batches_per_pass - self.drawn

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Batch:
        if self.order is None or self.drawn >= self.batches_per_pass:
            self.order = torch.randperm(len(self.examples), generator=self.generator)
            self.passes, self.drawn, self._it = self.passes + 1, 0, None
        if self._it is None:
            self._it = self._pass(self.drawn * self.batch_size)
        batch = next(self._it)
        self.drawn += 1
        return batch

    def _pass(self, start: int) -> Iterator[Batch]:
        ex, order = self.examples, self.order[start:]
        if ex.in_memory:
            return ex.batches(self.batch_size, order=order)
        if self._feed is None:
            self._feed = _Feed(ex, self.batch_size, self.train, self.loading, self.workers, True)
        return self._feed.run(order, pass_seed(self.seed, self.passes) + start if self.train else None)

    def state_dict(self) -> dict:
        return {"order": self.order, "passes": self.passes, "drawn": self.drawn, "size": len(self.examples)}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != len(self.examples):
            raise ValueError(f"stream state for {state['size']} examples, this set has {len(self.examples)}")
        self.order, self.passes, self.drawn, self._it = state["order"], state["passes"], state["drawn"], None


@dataclass
class TaskData:
    """Everything a method gets about its data: splits, class count and an optional official evaluator."""
    name: str
    train: ExampleSet
    test: ExampleSet
    num_classes: int
    input_shape: tuple
    val: ExampleSet | None = None
    # held out of training for model selection (never trained on by any method; observed labels)
    selection: ExampleSet | None = None
    extra_tests: dict[str, ExampleSet] = field(default_factory=dict)
    # evaluator(split_name, preds, examples) -> extra metrics (e.g. WILDS' official dataset.eval)
    evaluator: Callable[[str, torch.Tensor, ExampleSet], dict[str, float]] | None = None
    info: dict[str, Any] = field(default_factory=dict)   # realised noise rate, class counts, ...
    # split name -> the class indices it is scored on (logits masked to them, e.g. ImageNet-R/A's 200)
    class_subsets: dict[str, list[int]] = field(default_factory=dict)

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
        if self.selection is not None:
            out["selection"] = self.selection
        out.update(self.extra_tests)
        return out


def require_val(data: TaskData, who: str, instead: str) -> ExampleSet:
    """`data.val`, or the one ConfigError for every method or option that needs a validation split: `who`
    names it (e.g. "method 'lrw'"), `instead` says what works without one."""
    if data.val is None or len(data.val) == 0:
        raise ConfigError(f"{who} needs a validation split, and dataset {data.name!r} has none here; {instead}")
    return data.val
