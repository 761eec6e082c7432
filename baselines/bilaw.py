"""BiLAW (Holtz, Weng, Mishne, arXiv 2210.11513), clean-accuracy variant: a weight net maps each example's
multi-class margin — the vector (p_y − p_k)_k of its softmax probabilities, 0 at k = y — to a weight,
meta-learned every step through the shared look-ahead on the meta set (as MWN, whose optimiser, sizes and
mean-1 weights it keeps). No official code exists: every reading is stated in docs/methods/bilaw.md.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call

from molere.data import Batch
from molere.forward import BatchOutputs
from molere.lookahead import cloned_buffers
from molere.precision import no_autocast
from molere.registry import register_method
from molere.reweighting import mean_one

from .mwn import MWN


def multiclass_margins(logits: torch.Tensor, y: torch.Tensor, kind: str = "probability") -> torch.Tensor:
    """(B, C) margins of the true class over every class: p_y − p_k (or z_y − z_k for "logit"); 0 at k = y."""
    s = torch.softmax(logits.float(), 1) if kind == "probability" else logits.float()
    return s.gather(1, y.view(-1, 1)) - s


class MarginNet(nn.Module):
    """w(m) = sigmoid(MLP(m)): the multi-class margin vector in, a weight in (0, 1) out."""

    def __init__(self, classes: int, hidden: int = 100):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(classes, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, margins: torch.Tensor) -> torch.Tensor:
        first = self.net[0].weight
        with no_autocast(first.device.type):
            return torch.sigmoid(self.net(margins.to(first.dtype))).squeeze(1)


@register_method("bilaw")
class BiLAW(MWN):
    """BiLAW (clean accuracy): a multi-class margin → weight MLP meta-learned through the look-ahead."""

    class Hparams(MWN.Hparams):
        margin: Literal["probability", "logit"] = Field(
            "probability", description="margins of softmax probabilities (bounded) or of logits")

    def setup(self) -> None:
        self.weight_net = MarginNet(self.data.num_classes, self.hp.hidden).to(self.device)
        self._margins: tuple[Batch, torch.Tensor] | None = None

    @torch.no_grad()
    def margins(self, batch: Batch) -> torch.Tensor:
        """The batch's multi-class margins at the current θ (a train-mode forward on cloned buffers, cached
        for the step: the look-ahead and the real step weight the same margins)."""
        if self._margins is None or self._margins[0] is not batch:
            tensors = {**dict(self.model.named_parameters()), **cloned_buffers(self.model)}
            logits = functional_call(self.model, tensors, (batch.x,))
            self._margins = (batch, multiclass_margins(logits, batch.y, self.hp.margin))
        return self._margins[1]

    def example_weights(self, batch: Batch, out: BatchOutputs) -> torch.Tensor:
        w = self.weight_net(self.margins(batch))
        return mean_one(w) if self.hp.normalize else w

    def raw_weights(self, batch: Batch, out: BatchOutputs) -> torch.Tensor:
        return self.weight_net(self.margins(batch))
