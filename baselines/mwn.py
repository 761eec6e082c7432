"""MWN: Meta-Weight-Net (Shu et al., NeurIPS 2019, "Meta-Weight-Net: Learning an Explicit Mapping
for Sample Weighting"; official code `xjtushujun/meta-weight-net`).

A weight net V(ℓ; Φ) (MLP 1→100→1, ReLU, sigmoid) maps each example's detached training loss to a
weight. Every iteration (the shared `ReweightingTrainer`):
  1. look ahead θ̂(Φ) = θ − α · Σ_i V(ℓ_i) ∇ℓ_i / B,
  2. Φ ← Adam(lr 1e-3, weight decay 1e-4) on the meta-set cross-entropy of f_θ̂,
  3. the real step on Σ_i V(ℓ_i; Φ_new) ℓ_i / B with the weights detached (no normalisation).

Defaults from the paper: meta_every=1, meta_lr=1e-3, meta_weight_decay=1e-4, hidden=100, meta batch
100 (the paper's batch size for both sets), look-ahead step α = the classifier's current lr.
`normalize` (default False, the paper's Eq. and the ResNet-32 script `MW-Net.py`): True rescales each
batch's weights to mean 1, in the look-ahead and the real step, i.e. the loss Σ_i V_i ℓ_i / Σ_j V_j of the
official WRN-28-10 script `train_WRN-28-10_Meta_PGC.py`. It makes the objective invariant to a common
scale of V, so the meta-gradient can only reshape V(ℓ), not raise every weight towards 1.
Differences from the paper: the look-ahead is plain SGD as in the paper, but the real step uses the
run's optimiser (`TrainConfig`), whose momentum and weight decay the look-ahead ignores; the meta set
is the dataset's val split or a per-class hold-out of train (`meta_source`), not a fixed 1000-image
clean set; the real step reuses the look-ahead's training forward (same θ) instead of a second one.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from molere.data import Batch
from molere.registry import MethodCard, register_method
from molere.reweighting import ReweightingHparams, ReweightingTrainer, mean_one


class WeightNet(nn.Module):
    """V(ℓ) = sigmoid(MLP(ℓ)): one hidden ReLU layer, per-example loss in, weight in (0, 1) out."""

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        first = self.net[0].weight
        return torch.sigmoid(self.net(losses.to(first.dtype).unsqueeze(1))).squeeze(1)


@register_method("mwn")
class MWN(ReweightingTrainer):
    """Meta-Weight-Net: a loss → weight MLP meta-learned every step through a one-step look-ahead."""

    card = MethodCard(label="MWN", name="Meta-Weight-Net", color="#17becf", rank=9)

    class Hparams(ReweightingHparams):
        meta_batch_size: int = Field(100, gt=0, description="meta batch size (paper: 100, as the training batch)")
        meta_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the weight net")
        meta_weight_decay: float = Field(1e-4, ge=0, description="Adam weight decay of the weight net")
        hidden: int = Field(100, gt=0, description="hidden width of the weight net")
        normalize: bool = Field(False, description="weights rescaled to mean 1 per batch (Σ V ℓ / Σ V, official "
                                                   "WRN-28-10 script); False = mean of V ℓ (paper, MW-Net.py)")

    def setup(self) -> None:
        self.weight_net = WeightNet(self.hp.hidden).to(self.device)

    def example_weights(self, batch: Batch, losses: torch.Tensor) -> torch.Tensor:
        w = self.weight_net(losses)
        return mean_one(w) if self.hp.normalize else w   # Σ V = 0 keeps the zeros, as the official code

    def meta_parameters(self) -> list[nn.Parameter]:
        return list(self.weight_net.parameters())

    def meta_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.meta_parameters(), lr=self.hp.meta_lr, weight_decay=self.hp.meta_weight_decay)
