"""Seeded draws of example positions: every split, hold-out, subset and fold of the project is drawn here.

A draw visits groups of positions (every class, or all of them), puts each group in a canonical order
(position order, or by id when `ids` is given), orders it at random with a seeded generator and takes
the first k. The generator kind is part of the draw (`Draw`): each caller keeps the kind it has always
used, so the same seed gives the same positions as before this module existed.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch

Kind = Literal["numpy", "torch", "numpy_choice"]


class Draw:
    """A seeded generator of random orders. `kind`: "numpy" (`default_rng(seed).permutation`), "torch"
    (`torch.Generator().manual_seed(seed)`, `randperm`) or "numpy_choice" (`default_rng(seed).choice`
    without replacement: k of n directly, not the head of a permutation). `seed` may be an existing
    generator of that kind (its state is shared, not copied)."""

    def __init__(self, seed, kind: Kind = "numpy"):
        self.kind = kind
        if isinstance(seed, (np.random.Generator, torch.Generator)):
            self.gen = seed
        elif kind == "torch":
            self.gen = torch.Generator().manual_seed(int(seed))
        else:
            self.gen = np.random.default_rng(seed)

    def first(self, n: int, k: int | None = None) -> np.ndarray:
        """k (all when None) of range(n) in a random order."""
        k = n if k is None else k
        if self.kind == "torch":
            return torch.randperm(n, generator=self.gen)[:k].numpy()
        if self.kind == "numpy_choice":
            return self.gen.choice(n, k, replace=False)
        return self.gen.permutation(n)[:k]


Count = Callable[[int], int]   # how many of a group of this size; or a list: how many of each group


def share(fraction: float) -> Count:
    """round(fraction · group size) (Python's round, as every caller always used)."""
    return lambda m: int(round(fraction * m))


def at_most(k: int) -> Count:
    """k of every group, or the whole group when it is smaller."""
    return lambda m: min(k, m)


def by_class(labels, classes: Iterable[int] | None = None) -> list[np.ndarray]:
    """Positions of every class of `labels` (the classes present, ascending, unless `classes` is given)."""
    labels = np.asarray(labels)
    return [np.flatnonzero(labels == c) for c in (np.unique(labels) if classes is None else classes)]


def orders(groups: Iterable[np.ndarray], draw: Draw, count: Count | Sequence[int] | None = None,
           ids=None) -> Iterator[np.ndarray]:
    """Every group in a seeded random order (cut to `count(size)`), drawn lazily one group at a time (a
    caller may draw from `draw.gen` between groups). Canonical order first: by `ids` when given."""
    ids = None if ids is None else np.asarray(ids)
    for i, pos in enumerate(groups):
        pos = np.asarray(pos)
        if ids is not None:
            pos = pos[np.argsort(ids[pos], kind="stable")]
        k = None if count is None else count(len(pos)) if callable(count) else count[i]
        yield pos[draw.first(len(pos), k)]


def held_positions(groups: Iterable[np.ndarray], draw: Draw, count: Count | Sequence[int], ids=None) -> np.ndarray:
    """Sorted positions drawn: the first `count(size)` of every group's seeded random order."""
    chosen = list(orders(groups, draw, count, ids))
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)


def rest_of(n: int, held: np.ndarray) -> np.ndarray:
    """The positions of range(n) not in `held`, ascending."""
    return np.setdiff1d(np.arange(n), held)


def stratified_split(labels, fraction: float, seed, kind: Kind = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """(rest, held) positions, both sorted: round(`fraction` · size) of every class held out, reproducibly."""
    labels = np.asarray(labels)
    held = held_positions(by_class(labels), Draw(seed, kind), share(fraction))
    return rest_of(len(labels), held), held


def random_subset(n: int, k: int, seed, kind: Kind = "numpy") -> np.ndarray:
    """Sorted positions of k of range(n), drawn at random."""
    return held_positions([np.arange(n)], Draw(seed, kind), lambda m: k)
