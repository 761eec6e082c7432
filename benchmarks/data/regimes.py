"""Label regimes: clean labels, synthetic label noise (symmetric, pair, instance) or a long tail.

A regime changes only the observed labels (noise) or the examples kept (long tail) of the labelled set it
is given; true labels and the test sets are never touched. Everything is drawn from the trial seed.
Which labelled set that is (the whole labelled pool before the validation split is drawn, or the
training split only): `benchmarks.data.splits`.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from molere.config import Strict
from molere.data import ExampleSet
from molere.splits import Draw, by_class, held_positions

NOISE_KINDS = ("symmetric", "pair", "instance")
_STREAM = {"symmetric": 1, "pair": 2, "instance": 3, "longtail": 4}   # independent RNG streams per kind
_PART = {"train": 0, "val": 1, "selection": 2, "pool": 3}               # which labelled set a draw is for


def _bad(message: str):
    return PydanticCustomError("regime", message)


class RegimeConfig(Strict):
    """Which labels the training data shows: `clean`, a noise kind with `rate`, or `longtail` with `imbalance`;
    `val` says whether the validation split is drawn after the regime (default) or kept as the dataset gives it."""
    kind: Literal["clean", "symmetric", "pair", "instance", "longtail"] = "clean"
    rate: float = Field(0.0, validate_default=True, description="label-noise rate in [0, 1) (noise kinds)")
    imbalance: float = Field(1.0, validate_default=True,
                             description="largest / smallest class size >= 1 (longtail)")
    val: Literal["pool", "kept"] = Field(
        "pool", description="pool: the regime applies to the whole labelled pool before the validation split is "
                            "drawn, so val follows the training distribution (the paper's δ-split of S); kept: the "
                            "dataset's val split stays as the dataset gives it (e.g. clean and class-balanced): a "
                            "different distribution, so the planner adds erm_train_val (docs/model_selection.md)")

    @field_validator("rate")
    @classmethod
    def _rate_fits(cls, rate: float, info: ValidationInfo) -> float:
        kind = info.data.get("kind", "clean")
        if not 0 <= rate < 1:
            raise _bad("must be in [0, 1)")
        if kind in NOISE_KINDS and rate == 0:
            raise _bad(f"{kind} noise needs a rate in (0, 1); use kind: clean for clean labels")
        if kind not in NOISE_KINDS and rate != 0:
            raise _bad(f"kind {kind} takes no noise rate; use kind: symmetric, pair or instance for label noise")
        return rate

    @field_validator("imbalance")
    @classmethod
    def _imbalance_fits(cls, imbalance: float, info: ValidationInfo) -> float:
        kind = info.data.get("kind", "clean")
        if not (imbalance >= 1 and math.isfinite(imbalance)):
            raise _bad("must be a finite number >= 1")
        if kind != "longtail" and imbalance != 1:
            raise _bad(f"kind {kind} takes no imbalance; use kind: longtail for a long-tailed training set")
        return imbalance


def regime_label(r: RegimeConfig) -> str:
    """The regime as it appears in trial labels and tables: clean, symmetric-0.4, longtail-100, ..."""
    if r.kind == "clean":
        return "clean"
    value = r.imbalance if r.kind == "longtail" else r.rate
    return f"{r.kind}-{value:g}"


def regime_rng(seed: int, kind: str, part: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM[kind], _PART[part]])


def _flip_symmetric(y: np.ndarray, rate: float, C: int, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(y)) < rate
    return np.where(flip, (y + rng.integers(1, C, size=len(y))) % C, y)


def _flip_pair(y: np.ndarray, rate: float, C: int, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random(len(y)) < rate, (y + 1) % C, y)


def _noisy(examples: ExampleSet, regime: RegimeConfig, C: int, seed: int, part: str) -> ExampleSet:
    rng = regime_rng(seed, regime.kind, part)
    y = examples.labels.numpy().copy()
    if regime.kind == "symmetric":
        noisy = _flip_symmetric(y, regime.rate, C, rng)
    elif regime.kind == "pair":
        noisy = _flip_pair(y, regime.rate, C, rng)
    else:
        from benchmarks.data.instance_noise import flip_instance
        noisy = flip_instance(examples, regime.rate, C, seed, rng)
    return examples.with_labels(torch.as_tensor(noisy))


def longtail_counts(counts, imbalance: float) -> list[int]:
    """CIFAR-LT profile: class c keeps floor(n_max * imbalance ** (-c / (C - 1))), at least 1 and at most
    what it has (n_max = the largest class count; classes ordered by id)."""
    counts = [int(c) for c in counts]
    C, n_max = len(counts), max(counts)
    return [min(n, max(1, math.floor(n_max * imbalance ** (-c / max(C - 1, 1)) + 1e-9)))
            for c, n in enumerate(counts)]


def _longtail(examples: ExampleSet, imbalance: float, C: int, seed: int, part: str) -> ExampleSet:
    rng = regime_rng(seed, "longtail", part)
    y = examples.labels.numpy()
    keep_n = longtail_counts(np.bincount(y, minlength=C), imbalance)
    kept = [c for c, k in enumerate(keep_n) if k > 0]
    held = held_positions(by_class(y, kept), Draw(rng, "numpy_choice"), [keep_n[c] for c in kept])
    return examples.subset(held)


def regime_on(examples: ExampleSet, regime: RegimeConfig, C: int, seed: int, part: str = "train") -> ExampleSet:
    """`examples` under the regime: noisy observed labels (truth kept) or the long-tailed subset; `part`
    names the labelled set (its own RNG stream)."""
    if regime.kind in NOISE_KINDS:
        return _noisy(examples, regime, C, seed, part)
    if regime.kind == "longtail":
        return _longtail(examples, regime.imbalance, C, seed, part)
    return examples
