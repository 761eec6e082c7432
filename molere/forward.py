"""The outputs record of a training forward on a batch, what a weighting function `example_weights` reads."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BatchOutputs:
    """Logits and per-example training losses of a batch, and its pre-logit features when the model exposes
    a classifier head (`get_classifier()`, timm's protocol; else None). Features are always detached."""
    logits: torch.Tensor
    losses: torch.Tensor
    features: torch.Tensor | None = None

    def detached(self) -> "BatchOutputs":
        return BatchOutputs(self.logits.detach(), self.losses.detach(), self.features)


@contextmanager
def head_inputs(model: nn.Module):
    """Keep (detached) the input of the first classifier-head call inside the block: the features
    (nothing is kept for a model without `get_classifier()`)."""
    seen: list[torch.Tensor] = []
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        yield seen
        return

    def keep_first(_module, args):
        if not seen:
            seen.append(args[0].detach())

    handle = head.register_forward_pre_hook(keep_first)
    try:
        yield seen
    finally:
        handle.remove()
