"""Reference runs a method may depend on (the ERM first pass of the train-twice heuristic).

The harness passes a provider in `RunContext.reference`; a method asks it before training a
reference itself, and offers what it trained so that the next trial of the same key reuses it.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class ReferenceProvider(Protocol):
    def erm_pool_margins(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, margins) of the pooled train + val examples under the ERM model of this run's key
        (observed labels), or None when no such ERM run exists yet."""

    def offer_erm_pool_margins(self, ids: np.ndarray, margins: np.ndarray) -> None:
        """Keep margins computed by an in-process ERM pass for later trials of the same key."""

    # optional (looked up with getattr): cross-fitted margins of `baselines.crossfit`
    def erm_crossfit_margins(self, folds: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, out-of-fold margins) of the pool with `folds` folds, or None when not stored."""

    def offer_erm_crossfit_margins(self, folds: int, ids: np.ndarray, margins: np.ndarray) -> None:
        """Keep cross-fitted margins computed in-process for later trials of the same key."""
