"""Training the reference method (the registry's role-"reference" method, ERM): its out-of-fold models
and the in-process fallback of `molere.reference.ReferenceService`.

Out-of-fold (cross-fitted) margins: the pool (train + official val) is cut into K folds stratified by
observed label (`fold_of`); fold k's margins come from the reference method trained on the other K − 1
folds with the run's model and training settings, initialised after `torch.manual_seed(seed · 1000 + k)`,
and evaluated once, after its last epoch. Why and what it changes: docs/methods/train_twice.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .data import ExampleSet, TaskData
from .reference import ReferenceMargins, ReferencePredictions
from .splits import Draw, by_class, orders
from .registry import METHODS

if TYPE_CHECKING:
    from .trainer import RunContext, Trainer


def fold_of(ids: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index (0..folds-1) of every pool position: stratified by label, independent of pool order."""
    ids, labels = np.asarray(ids), np.asarray(labels)
    draw = Draw([seed, folds])
    out = np.empty(len(ids), dtype=np.int64)
    for pos in orders(by_class(labels), draw, ids=ids):   # lazy: each class's offset is drawn after its order
        out[pos] = (np.arange(len(pos)) + draw.gen.integers(folds)) % folds
    return out


def fold_task(data: TaskData, folds: int, fold: int, seed: int) -> TaskData:
    """The task of out-of-fold model `fold`: train on the pool without that fold, test = the fold."""
    pool = data.pool()
    which = fold_of(pool.ids.numpy(), pool.labels.numpy(), folds, seed)
    return TaskData(f"{data.name}-crossfit{fold}", train=pool.subset(np.flatnonzero(which != fold)),
                    test=pool.subset(np.flatnonzero(which == fold)), num_classes=data.num_classes,
                    input_shape=data.input_shape)


def fold_trainer(data: TaskData, cfg, context: "RunContext", folds: int, fold: int) -> "Trainer":
    """The reference method on `fold_task(...)`, seeded by seed · 1000 + fold (the global torch RNG is
    seeded here: call it inside `torch.random.fork_rng` to keep the caller's)."""
    from .trainer import RunContext
    if context.model_factory is None:
        raise ValueError("out-of-fold reference margins need RunContext.model_factory")
    seed = context.seed * 1000 + fold
    torch.manual_seed(seed)
    return METHODS.get(METHODS.reference())(
        context.model_factory(), fold_task(data, folds, fold, context.seed), cfg, None,
        RunContext(seed=seed, device=context.device, model_factory=context.model_factory, cpus=context.cpus,
                   callbacks=list(context.callbacks)))


def fold_margins(trainer: "Trainer") -> tuple[np.ndarray, np.ndarray]:
    """Train an out-of-fold model to its last epoch (no evaluation on the way), then score its held-out
    fold once: (ids, margins against the observed labels)."""
    trainer.fit(evaluate=False)
    out = trainer.outputs(trainer.data.test, true_labels=False)
    return out.ids, out.observed_margins


def _devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def crossfit_margins(pool: ExampleSet, data: TaskData, cfg, context: "RunContext", folds: int,
                     device: torch.device) -> np.ndarray:
    """Out-of-fold margins of `pool` (= data.pool(), observed labels), in pool order, trained here."""
    from .trainer import RunContext
    margins = np.empty(len(pool), dtype=np.float32)
    position = {int(i): p for p, i in enumerate(pool.ids.tolist())}
    plain = RunContext(seed=context.seed, device=context.device, model_factory=context.model_factory,
                       cpus=context.cpus)
    for k in range(folds):
        with torch.random.fork_rng(devices=_devices(device)):
            ids, m = fold_margins(fold_trainer(data, cfg, plain, folds, k))
        margins[[position[int(i)] for i in ids]] = m
    return margins


class InProcessReference:
    """The reference trained in this process, for a run without a stored one (`benchmarks.train`)."""

    def __init__(self, trainer: "Trainer"):
        self.data, self.cfg, self.context, self.device = trainer.data, trainer.cfg, trainer.context, trainer.device
        self._trained: "Trainer | None" = None

    def _reference(self) -> "Trainer":
        """The reference trial of the key, trained here: `torch.manual_seed(seed)`, the caller's RNG kept."""
        from .trainer import RunContext
        ctx = self.context
        if ctx.model_factory is None:
            raise ValueError("training the reference in-process needs RunContext.model_factory")
        if self._trained is None:
            with torch.random.fork_rng(devices=_devices(self.device)):
                torch.manual_seed(ctx.seed)
                ref = METHODS.get(METHODS.reference())(
                    ctx.model_factory(), self.data, self.cfg, None,
                    RunContext(seed=ctx.seed, device=ctx.device, model_factory=ctx.model_factory,
                               run_config=ctx.run_config, cpus=ctx.cpus))
                ref.fit(evaluate=False)
            self._trained = ref
        return self._trained

    def pool_margins(self) -> ReferenceMargins:
        pool = self.data.pool()
        return ReferenceMargins(pool.ids.numpy(), self._reference().outputs(pool, true_labels=False).margins,
                                "in_process")

    def oof_margins(self, folds: int) -> ReferenceMargins:
        pool = self.data.pool()
        return ReferenceMargins(pool.ids.numpy(), crossfit_margins(pool, self.data, self.cfg, self.context, folds,
                                                                   self.device), "in_process")

    def test_outputs(self) -> ReferencePredictions:
        out = self._reference().outputs(self.data.test)
        return ReferencePredictions(out.ids, out.preds, out.margins, "in_process")
