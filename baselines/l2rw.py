"""L2RW: Learning to Reweight Examples (Ren et al., ICML 2018; official TF code
`uber-research/learning-to-reweight-examples`).

No persistent weight net: every batch gets fresh weights from a look-ahead at ε = 0,
    θ̂(ε) = θ − α ∇θ Σ_i ε_i ℓ_i(θ),   w̃_i = max(−∂L_meta(θ̂)/∂ε_i |ε=0, 0),   w = w̃ / Σ w̃,
and the real step follows Σ_i w_i ℓ_i (weights detached). At ε = 0 the look-ahead leaves θ unchanged
but its gradient is not zero: −∂L_meta/∂ε_i = α ⟨∇L_meta(θ), ∇ℓ_i(θ)⟩. A batch whose weights are all
zero contributes no gradient that step (the run's optimiser momentum/weight decay still act, as in the
official code); the fraction of such batches is logged as `train/zero_weight_batch`.

Defaults from the paper: a look-ahead every step (meta_every=1), meta batch 100 (the paper's batch
size for both sets), look-ahead step α = the classifier's lr (it only scales w̃, so normalised weights
do not depend on it). Differences from the paper: the look-ahead is plain SGD like the paper, but the
real step uses the run's optimiser (`TrainConfig`); the meta set is the dataset's val split or a
per-class hold-out of train (`meta_source`); the real step reuses the look-ahead's training forward.
`meta_every=Q>1` (not in the paper) trains the steps between look-aheads with uniform weights.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from molere.data import Batch
from molere.registry import MethodCard, register_method
from molere.reweighting import MetaHparams, MetaSourceHparams, MetaTrainer, clamped_normalised, weight_stats


class L2RWOptions(MetaHparams):
    """The look-ahead options of L2RW-style methods (weights are the meta step's own output)."""
    meta_batch_size: int = Field(100, gt=0, description="meta batch size (paper: 100, as the training batch)")
    weights_after_meta: Literal[True] = Field(True, description="always true: the weights are the meta step's output")


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
        xv, yv = self.next_meta_batch()
        hg = self.lookahead.hypergradient(batch.x, batch.y, val_x=xv, val_y=yv, lr=self.lookahead_lr())
        hg.commit_buffers()   # its training forward is the real step's forward
        w = clamped_normalised(hg.dw)
        self.log_step(meta_val_loss=hg.val_loss.item(), zero_weight_batch=float(w.sum() == 0), **weight_stats(w))
        return w, hg.train_losses

    def training_step(self, batch: Batch) -> torch.Tensor:
        if not self.meta_step_due():
            return F.cross_entropy(self.model(batch.x), batch.y)
        w, losses = self.meta_weights(batch)
        return (w * losses).sum()
