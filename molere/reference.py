"""The ERM reference of a run's key as one typed service: what a method declares it needs, what it gets.

A method declares its needs per hyperparameter setting (`Trainer.reference_needs(hp) -> ReferenceNeeds`);
the sweep planner schedules exactly those (the reference trial, K out-of-fold models) before the method's
trial. At run time the method asks `self.reference` (a `ReferenceService`): a stored result when the
harness has one (`RunContext.reference`, a `Reference`), else the same thing trained in-process
(`molere.reference_runs`). Asking for something undeclared is an error; `train=False` only peeks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from .config import ConfigError

if TYPE_CHECKING:
    from .trainer import Trainer

Source = Literal["reused", "in_process"]


@dataclass(frozen=True)
class ReferenceNeeds:
    """What a method needs from the reference run of its key (nothing by default)."""
    pool_margins: bool = False          # its final margins on the pool (train + official val, observed labels)
    oof_folds: tuple[int, ...] = ()     # out-of-fold margins of the pool, one entry per fold count K
    test_outputs: bool = False          # its test-split predictions and margins

    def __post_init__(self):
        object.__setattr__(self, "oof_folds", tuple(sorted(set(int(k) for k in self.oof_folds))))
        if any(k < 2 for k in self.oof_folds):
            raise ValueError(f"ReferenceNeeds.oof_folds: every fold count must be ≥ 2 (got {self.oof_folds})")

    def __or__(self, other: "ReferenceNeeds") -> "ReferenceNeeds":
        return ReferenceNeeds(self.pool_margins or other.pool_margins, self.oof_folds + other.oof_folds,
                              self.test_outputs or other.test_outputs)

    def __bool__(self) -> bool:
        return self.pool_margins or bool(self.oof_folds) or self.test_outputs

    @property
    def reference_trial(self) -> bool:
        """Whether the reference trial itself (not only its out-of-fold models) must run first."""
        return self.pool_margins or self.test_outputs

    def to_dict(self) -> dict:
        return {**asdict(self), "oof_folds": list(self.oof_folds)}


@dataclass(frozen=True)
class ReferenceMargins:
    """Per-example margins (observed labels) of the reference, by example id, and where they came from."""
    ids: np.ndarray
    margins: np.ndarray
    source: Source = "reused"


@dataclass(frozen=True)
class ReferencePredictions:
    """The reference's test-split predictions and margins, by example id."""
    ids: np.ndarray
    preds: np.ndarray
    margins: np.ndarray
    source: Source = "reused"


class Reference(Protocol):
    """A provider of reference results that exist already (the harness's result store): None = absent."""

    def pool_margins(self) -> ReferenceMargins | None: ...

    def oof_margins(self, folds: int) -> ReferenceMargins | None: ...

    def test_outputs(self) -> ReferencePredictions | None: ...


class ReferenceService:
    """What a trainer asks: the stored result, else (`train=True`) the same trained in-process."""

    def __init__(self, trainer: "Trainer"):
        self.trainer, self.stored = trainer, trainer.context.reference
        self.needs = type(trainer).reference_needs(trainer.hp)
        self._in_process = None

    def _check(self, what: str, declared: bool) -> None:
        if not declared:
            name = self.trainer.registered_name or type(self.trainer).__name__
            raise ConfigError(f"method {name!r} asks for the reference's {what} but its reference_needs() does not "
                              f"declare it (got {self.needs}); declare it so the planner schedules it")

    def _local(self):
        if self._in_process is None:
            from .reference_runs import InProcessReference
            self._in_process = InProcessReference(self.trainer)
        return self._in_process

    def _get(self, what: str, declared: bool, train: bool, ask):
        if train:
            self._check(what, declared)
        found = ask(self.stored) if self.stored is not None else None
        return found if found is not None or not train else ask(self._local())

    def pool_margins(self, train: bool = True) -> ReferenceMargins | None:
        return self._get("pool margins", self.needs.pool_margins, train, lambda r: r.pool_margins())

    def oof_margins(self, folds: int, train: bool = True) -> ReferenceMargins | None:
        return self._get(f"out-of-fold margins with {folds} folds", folds in self.needs.oof_folds, train,
                         lambda r: r.oof_margins(folds))

    def test_outputs(self, train: bool = True) -> ReferencePredictions | None:
        return self._get("test predictions", self.needs.test_outputs, train, lambda r: r.test_outputs())
