"""Learned ReWeighting (LRW) on a fixed (training set, validation set) pair — paper §1.1, Eqs. 12-13.

The classifier θ follows the weighted loss mean_j g_φ(x_j) ℓ_j (Eq. 13); every Q = `meta_every`
classifier steps the meta-network φ (`molere.metanet.MetaNet`) takes one step on the validation loss
of the one-step look-ahead θ̂(φ) (Eq. 12, `molere.lookahead`). A subclass only says which pair of sets
it trains on (`split()`); `baselines.lrw` uses the official validation split, the train-twice
baselines carve one from ERM margins, and MOLERE's warm-up is this on a random split.
"""
from __future__ import annotations

import torch
from pydantic import Field

from molere.data import Batch
from molere.forward import BatchOutputs
from molere.metanet import MetaNet, MetaNetOptions
from molere.reweighting import MetaHparams, ReweightingStepHparams, ReweightingTrainer


class LRWHparams(MetaHparams, ReweightingStepHparams, MetaNetOptions):
    """Look-ahead and step options and the meta-network (`MetaNetOptions`); Q = 5 as in §2.4."""
    meta_every: int = Field(5, ge=1, description="meta update every Q classifier steps (paper: Q = 5)")


class LRWTrainer(ReweightingTrainer):
    """θ on the φ-weighted training loss, φ on the look-ahead's validation loss (split() gives both)."""

    Hparams = LRWHparams
    weights_see_labels = False   # φ(x): the weight cannot depend on the (observed) label

    def setup(self) -> None:
        self.metanet = MetaNet(self.hp, self.model, self.data.input_shape)
        super().setup()

    def example_weights(self, batch: Batch, out: BatchOutputs) -> torch.Tensor:
        return self.metanet.weights(batch.x)

    def raw_weights(self, batch: Batch, out: BatchOutputs) -> torch.Tensor:
        return self.metanet.weights(batch.x, normalize=False)

    def meta_parameters(self):
        return list(self.metanet.parameters())

    def meta_optimizer(self):
        return self.metanet.make_optimizer()
