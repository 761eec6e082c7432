"""Per-example weights of methods without a weight network (MBR, StableNet, RHO-loss, JTT): each training
example's latest weight is recorded as it is used, and summarised at the end by the same "does the
reweighting do anything?" diagnostics as a weight network's (`molere.diagnostics`).
"""
from __future__ import annotations

import numpy as np
import torch

from molere.data import Batch
from molere.diagnostics import aligned, weight_diagnostics
from molere.evaluation import Outputs
from molere.forward import BatchOutputs


class RecordedWeights:
    """Mixin for a `Trainer`: `record_weights(batch.idx, w)` keeps the latest weight every training
    position was trained with; `reweighting_diagnostics` summarises them over the positions seen."""

    weights_recorded = "the latest weight each training example was trained with"

    def record_weights(self, idx: torch.Tensor, w: torch.Tensor) -> None:
        if getattr(self, "_recorded", None) is None or len(self._recorded) != len(self.train_set):
            self._recorded = torch.full((len(self.train_set),), float("nan"))
        self._recorded[idx.cpu()] = w.detach().float().cpu()

    def recorded_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(training positions with a weight, their weights); a method may define its own."""
        rec = getattr(self, "_recorded", None)
        if rec is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        seen = torch.nonzero(~torch.isnan(rec)).flatten()
        return seen.numpy(), rec[seen].numpy()

    def pass_statistics(self, batch: Batch, out: BatchOutputs) -> dict[str, torch.Tensor]:
        return {"loss": out.losses}

    @torch.no_grad()
    def reweighting_diagnostics(self, train_out: Outputs | None = None) -> dict:
        """`molere.diagnostics` of the recorded weights against the final loss, label noise and ERM margin."""
        if train_out is None:
            train_out = self.outputs(self.train_set, true_labels=False, statistics=True)
        pos, w = self.recorded_weights()
        ex = self.train_set
        found = self.reference.pool_margins(train=False)   # the stored ERM run's, when there is one
        erm = aligned(ex.ids.numpy()[pos], found.ids, found.margins) if found is not None else None
        noisy = (ex.labels != ex.true_labels).numpy()[pos]
        out = weight_diagnostics(w, train_out.statistics["loss"][pos], noisy, erm)
        out.update(examples=int(len(pos)), weights_recorded=self.weights_recorded)
        return out

    def extra_state(self) -> dict:
        return {"recorded": getattr(self, "_recorded", None)}

    def load_extra_state(self, state: dict) -> None:
        self._recorded = state.get("recorded")
