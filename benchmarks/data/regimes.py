"""Training-label regimes: clean labels, synthetic label noise (symmetric, pair, instance) or a long tail.

A regime changes only the observed labels (noise) or the training examples kept (long tail); true
labels and the test sets are never touched. Everything is drawn from the trial seed.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from molere.config import Strict
from molere.data import ExampleSet, TaskData

NOISE_KINDS = ("symmetric", "pair", "instance")
_STREAM = {"symmetric": 1, "pair": 2, "instance": 3, "longtail": 4}   # independent RNG streams per kind
INSTANCE_STD = 0.1       # std of the per-example flip rate around `rate` (Xia et al. 2020)
ID_FEATURES = 32         # size of the per-example random feature used for dataset-backed sets


def _bad(message: str):
    return PydanticCustomError("regime", message)


class RegimeConfig(Strict):
    """Which labels the training split shows: `clean`, a noise kind with `rate`, or `longtail` with `imbalance`."""
    kind: Literal["clean", "symmetric", "pair", "instance", "longtail"] = "clean"
    rate: float = Field(0.0, validate_default=True, description="label-noise rate in [0, 1) (noise kinds)")
    imbalance: float = Field(1.0, validate_default=True,
                             description="largest / smallest class size >= 1 (longtail)")

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


def _rng(seed: int, kind: str, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM[kind], {"train": 0, "val": 1, "selection": 2}[split]])


def _flip_symmetric(y: np.ndarray, rate: float, C: int, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(y)) < rate
    return np.where(flip, (y + rng.integers(1, C, size=len(y))) % C, y)


def _flip_pair(y: np.ndarray, rate: float, C: int, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random(len(y)) < rate, (y + 1) % C, y)


def _features(examples: ExampleSet, seed: int) -> np.ndarray:
    """Flattened inputs, or for dataset-backed sets a seeded random Fourier feature of each global id."""
    if examples.in_memory:
        return examples.x.reshape(len(examples), -1).float().numpy()
    rng = np.random.default_rng([seed, _STREAM["instance"], 99])
    freq, phase = rng.normal(size=ID_FEATURES), rng.uniform(0, 2 * np.pi, size=ID_FEATURES)
    return np.cos(examples.ids.double().numpy()[:, None] * freq + phase).astype(np.float32)


def _flip_instance(examples: ExampleSet, y: np.ndarray, rate: float, C: int, rng: np.random.Generator,
                   seed: int) -> np.ndarray:
    """Instance-dependent noise after Xia et al. (NeurIPS 2020, "Part-dependent label noise").

    Example i flips with probability q_i ~ N(rate, 0.1^2) truncated to [0, 1]; a flipped label goes
    to class k != y_i with probability softmax_k(x_i . W[y_i]), where W[c] (D x C) is a seeded
    standard-normal projection of the flattened input (true class excluded). Sets without
    in-memory inputs use the per-example random feature of `_features` instead of x.
    """
    from scipy.stats import truncnorm

    feats = _features(examples, seed)
    a, b = (0 - rate) / INSTANCE_STD, (1 - rate) / INSTANCE_STD
    q = truncnorm.rvs(a, b, loc=rate, scale=INSTANCE_STD, size=len(y), random_state=rng)
    proj = rng.standard_normal((C, feats.shape[1], C)).astype(feats.dtype)
    logits = np.empty((len(y), C))
    for c in range(C):
        logits[y == c] = feats[y == c] @ proj[c]
    logits[np.arange(len(y)), y] = -np.inf
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    target = (p.cumsum(1) < rng.random((len(y), 1))).sum(1).clip(max=C - 1)
    target = np.where(target == y, (y + 1) % C, target)   # only reachable through rounding at the edge
    return np.where(rng.random(len(y)) < q, target, y)


def _noisy(examples: ExampleSet, regime: RegimeConfig, C: int, seed: int, split: str) -> ExampleSet:
    rng = _rng(seed, regime.kind, split)
    y = examples.labels.numpy().copy()
    if regime.kind == "symmetric":
        noisy = _flip_symmetric(y, regime.rate, C, rng)
    elif regime.kind == "pair":
        noisy = _flip_pair(y, regime.rate, C, rng)
    else:
        noisy = _flip_instance(examples, y, regime.rate, C, rng, seed)
    return examples.with_labels(torch.as_tensor(noisy))


def longtail_counts(counts, imbalance: float) -> list[int]:
    """CIFAR-LT profile: class c keeps floor(n_max * imbalance ** (-c / (C - 1))), at least 1 and at most
    what it has (n_max = the largest class count; classes ordered by id)."""
    counts = [int(c) for c in counts]
    C, n_max = len(counts), max(counts)
    return [min(n, max(1, math.floor(n_max * imbalance ** (-c / max(C - 1, 1)) + 1e-9)))
            for c, n in enumerate(counts)]


def _longtail(examples: ExampleSet, imbalance: float, C: int, seed: int) -> ExampleSet:
    rng = _rng(seed, "longtail", "train")
    y = examples.labels.numpy()
    keep_n = longtail_counts(np.bincount(y, minlength=C), imbalance)
    keep = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c, k in enumerate(keep_n) if k > 0]
    return examples.subset(np.sort(np.concatenate(keep)))


def apply_regime(task: TaskData, regime: RegimeConfig, seed: int) -> TaskData:
    """The task with its regime applied (a new TaskData; `task` itself is not modified).

    Noise kinds corrupt the observed labels of train, val and the selection split (test stays clean);
    `longtail` subsamples the training split only. `task.info` gains the regime, the realised train noise rate, the
    per-class train counts and, for `longtail`, the realised imbalance ratio.
    """
    C = task.num_classes
    train, val, selection = task.train, task.val, task.selection
    if regime.kind in NOISE_KINDS:
        train = _noisy(train, regime, C, seed, "train")
        val = None if val is None else _noisy(val, regime, C, seed, "val")
        selection = None if selection is None else _noisy(selection, regime, C, seed, "selection")
    elif regime.kind == "longtail":
        train = _longtail(train, regime.imbalance, C, seed)
    counts = train.class_counts(C)
    info = dict(task.info, regime=regime.model_dump(),
                train_noise_rate=float((train.labels != train.true_labels).float().mean()) if len(train) else 0.0,
                train_class_counts=counts.tolist())
    if val is not None and len(val):
        info["val_noise_rate"] = float((val.labels != val.true_labels).float().mean())
    if selection is not None and len(selection):
        info["selection_noise_rate"] = float((selection.labels != selection.true_labels).float().mean())
    if regime.kind == "longtail":
        present = counts[counts > 0]
        info["imbalance_ratio"] = float(present.max() / present.min())
    return dataclasses.replace(task, train=train, val=val, selection=selection, info=info)
