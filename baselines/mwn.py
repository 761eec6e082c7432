"""MWN: Meta-Weight-Net (Shu et al., NeurIPS 2019): a loss → weight MLP V(ℓ; Φ) meta-learned every step
through the shared `ReweightingTrainer` look-ahead; `normalize` gives the official WRN script's Σ V ℓ / Σ V.

Paper defaults, our readings and measurements: docs/methods/mwn.md.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from molere.data import Batch
from molere.forward import BatchOutputs
from molere.precision import no_autocast
from molere.registry import register_method
from molere.reweighting import ReweightingHparams, ReweightingTrainer, mean_one


class WeightNet(nn.Module):
    """V(ℓ) = sigmoid(MLP(ℓ)): one hidden ReLU layer, per-example loss in, weight in (0, 1) out."""

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        first = self.net[0].weight
        with no_autocast(first.device.type):   # float32 under a training autocast (the net is tiny)
            return torch.sigmoid(self.net(losses.to(first.dtype).unsqueeze(1))).squeeze(1)


@register_method("mwn")
class MWN(ReweightingTrainer):
    """Meta-Weight-Net: a loss → weight MLP meta-learned every step through a one-step look-ahead."""

    class Hparams(ReweightingHparams):
        meta_batch_size: int = Field(100, gt=0, description="meta batch size (paper: 100, as the training batch)")
        meta_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the weight net")
        meta_weight_decay: float = Field(1e-4, ge=0, description="Adam weight decay of the weight net")
        hidden: int = Field(100, gt=0, description="hidden width of the weight net")
        normalize: bool = Field(True, description="weights rescaled to mean 1 per batch (Σ V ℓ / Σ V, official "
                                                  "WRN-28-10 script; ERM's step size); False = mean of V ℓ (paper)")

    def setup(self) -> None:
        self.weight_net = WeightNet(self.hp.hidden).to(self.device)

    def example_weights(self, batch: Batch, out: BatchOutputs) -> torch.Tensor:
        w = self.weight_net(out.losses)
        return mean_one(w) if self.hp.normalize else w   # Σ V = 0 keeps the zeros, as the official code

    def raw_weights(self, batch: Batch, out: BatchOutputs) -> torch.Tensor:
        return self.weight_net(out.losses)

    def meta_parameters(self) -> list[nn.Parameter]:
        return list(self.weight_net.parameters())

    def meta_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.meta_parameters(), lr=self.hp.meta_lr, weight_decay=self.hp.meta_weight_decay)
