"""L2RW: Learning to Reweight Examples (Ren et al., ICML 2018): fresh per-batch weights
w = normalised max(−∂L_meta/∂ε, 0) from a look-ahead at ε = 0; no persistent weight net.

`weight_norm` (default "ess", a deviation): the paper's weights (sum 1) times their effective sample size
fraction, so the step keeps ERM's per-example scale instead of growing as the weights concentrate.
Paper defaults, our readings and measurements: docs/methods/l2rw.md.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from molere.data import Batch
from molere.registry import register_method
from molere.reweighting import MetaHparams, MetaSourceHparams, MetaTrainer, clamped_normalised, weight_stats


def batch_weights(dw: torch.Tensor, rule: str) -> torch.Tensor:
    """Per-example weights of one batch from its meta-gradients ∂L_meta/∂ε (docs/methods/l2rw.md):
    "sum"   max(−dw, 0) / Σ (the paper's; all zero stays zero);
    "ess"   that times its effective-sample-size fraction (Σ w)² / (B Σ w²): Σ w = ESS / B, so a kept example
            keeps about ERM's weight 1/B and the step's scale does not grow as the weights concentrate;
    "shift" (−dw − min(−dw) + 1/B) / Σ: every example keeps a floor (FSR's official rule for clean labels,
            `clip_meta_weight: false`)."""
    if rule == "shift":
        r = -dw
        u = r - r.min() + 1.0 / len(dw)
        return u / u.sum()
    w = clamped_normalised(dw)
    if rule == "ess" and w.sum() > 0:
        w = w / (len(w) * w.pow(2).sum())   # = w · (Σw)² / (B Σw²) with Σw = 1
    return w


class L2RWOptions(MetaHparams):
    """The look-ahead options of L2RW-style methods (weights are the meta step's own output)."""
    meta_batch_size: int = Field(100, gt=0, description="meta batch size (paper: 100, as the training batch)")
    weight_norm: Literal["ess", "sum", "shift"] = Field(
        "ess", description="ess: the paper's sum-1 weights times their effective sample size fraction (ERM's "
                           "per-example step; default, a deviation); sum: the paper's; shift: FSR's clean-label rule")


@register_method("l2rw")
class L2RW(MetaTrainer):
    """Learning to Reweight: per-batch weights from the meta-gradient of a look-ahead at ε = 0."""

    class Hparams(L2RWOptions, MetaSourceHparams):
        pass

    def setup(self) -> None:
        self.lookahead = self.make_lookahead(reduction="sum")

    def meta_weights(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, ℓ): L2RW weights of the batch and its per-example losses (graph to θ, for the real step)."""
        hg = self.meta_lookahead(batch)   # its training forward is the real step's forward
        w = batch_weights(hg.dw, self.hp.weight_norm)
        self.log_step(zero_weight_batch=float(w.sum() == 0), **weight_stats(w))
        return w, hg.train_losses

    def training_step(self, batch: Batch) -> torch.Tensor:
        if not self.meta_step_due():
            return self.train_loss(self.model(batch.x), batch.y)
        w, losses = self.meta_weights(batch)
        return (w * losses).sum()
