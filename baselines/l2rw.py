"""L2RW: Learning to Reweight Examples (Ren et al., ICML 2018): fresh per-batch weights
w = normalised max(−∂L_meta/∂ε, 0) from a look-ahead at ε = 0; no persistent weight net.

Paper defaults, our readings and measurements: docs/methods/l2rw.md.
"""
from __future__ import annotations

import torch
from pydantic import Field

from molere.data import Batch
from molere.registry import MethodCard, register_method
from molere.reweighting import MetaHparams, MetaSourceHparams, MetaTrainer, clamped_normalised, weight_stats


class L2RWOptions(MetaHparams):
    """The look-ahead options of L2RW-style methods (weights are the meta step's own output)."""
    meta_batch_size: int = Field(100, gt=0, description="meta batch size (paper: 100, as the training batch)")


@register_method("l2rw")
class L2RW(MetaTrainer):
    """Learning to Reweight: per-batch weights from the meta-gradient of a look-ahead at ε = 0."""

    card = MethodCard(label="L2RW", name="Learning to Reweight Examples", color="#8c564b", rank=10)

    class Hparams(L2RWOptions, MetaSourceHparams):
        pass

    def setup(self) -> None:
        self.lookahead = self.make_lookahead(reduction="sum")

    def meta_weights(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, ℓ): L2RW weights of the batch and its per-example losses (graph to θ, for the real step)."""
        hg = self.meta_lookahead(batch)   # its training forward is the real step's forward
        w = clamped_normalised(hg.dw)
        self.log_step(zero_weight_batch=float(w.sum() == 0), **weight_stats(w))
        return w, hg.train_losses

    def training_step(self, batch: Batch) -> torch.Tensor:
        if not self.meta_step_due():
            return self.train_loss(self.model(batch.x), batch.y)
        w, losses = self.meta_weights(batch)
        return (w * losses).sum()
