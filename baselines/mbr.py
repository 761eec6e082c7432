"""MBR: margin-based reweighting (Wang et al., NeurIPS 2021, MAIL) on clean training data: each example's
loss is weighted by w = 3·sigmoid(slope·(PM + bias)), PM = max_{k≠y} p_k − p_y of the training forward,
detached, after an unweighted burn-in.

Official-code facts, our readings and measurements: docs/methods/mbr.md.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from molere.config import Strict
from molere.data import Batch
from molere.margins import probabilistic_margin
from molere.registry import register_method
from molere.reweighting import mean_one, weight_stats
from molere.trainer import Trainer

from .recorded import RecordedWeights


def mbr_weights(logits: torch.Tensor, y: torch.Tensor, slope: float, bias: float) -> torch.Tensor:
    """3·sigmoid(slope·(PM + bias)) with PM = max_{k≠y} p_k − p_y (the negated probabilistic margin)."""
    pm = -probabilistic_margin(logits.detach(), y)
    return 3.0 * torch.sigmoid(slope * (pm + bias))


@register_method("mbr")
class MBR(RecordedWeights, Trainer):
    """Margin-based reweighting (MAIL): low-margin examples weighted up by a fixed sigmoid of the margin."""

    class Hparams(Strict):
        slope: float = Field(1.0, gt=0, description="slope of the sigmoid (official code: 1.0)")
        bias: float = Field(-1.5, description="bias added to PM before the sigmoid (official code: -1.5)")
        burn_in: float = Field(0.625, ge=0, lt=1, description="fraction of the epochs trained unweighted first "
                                                              "(official code: 75 of 120 epochs)")
        normalize: Literal["times3", "mean_one"] = Field(
            "times3", description="times3: the official 3·sigmoid (mean below 1: a smaller step); "
                                  "mean_one: rescaled to mean 1 per batch (ERM's step size)")

    def split(self):
        self.info.update(train_size=len(self.data.train), meta_size=0, burn_in_epochs=self.burn_in_epochs)
        return self.data.train, None

    @property
    def burn_in_epochs(self) -> int:
        return int(round(self.hp.burn_in * self.cfg.epochs))

    def example_weights(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The weights of one batch: the MAIL formula after the burn-in (ones during it)."""
        if self.epoch < self.burn_in_epochs:
            return torch.ones(len(y), device=logits.device)
        w = mbr_weights(logits, y, self.hp.slope, self.hp.bias)
        return mean_one(w) if self.hp.normalize == "mean_one" else w

    def training_step(self, batch: Batch) -> torch.Tensor:
        logits = self.model(batch.x)
        losses = self.train_loss(logits, batch.y, "none")
        w = self.example_weights(logits, batch.y)
        self.record_weights(batch.idx, w)
        self.log_step(**weight_stats(w))
        return (w * losses).mean()
