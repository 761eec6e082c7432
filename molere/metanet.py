"""The LRW meta-network φ: a positive weight per training example from its input x (paper §1.1, §2.1),
on the flattened input or the classifier's detached features, and its optimiser.
Readings of the paper, `normalize` and what the literal equation measured: docs/design/metanet.md.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from .config import Strict
from .lookahead import cloned_buffers, features_on
from .precision import full, no_autocast
from .reweighting import mean_one


class MetaNetOptions(Strict):
    """How φ is built and optimised."""
    meta_net: Literal["input", "features"] = Field(
        "input", description="φ on the flattened input, or on the classifier's detached features")
    hidden: list[PositiveInt] = Field(default_factory=lambda: [64], description="hidden widths of φ ([] = linear)")
    output: Literal["sigmoid", "softplus"] = Field("sigmoid", description="positive output of φ")
    normalize: bool = Field(True, description="rescale each batch's weights to mean 1 (default: ERM's step size); "
                                                 "False = Eq. 13 literally (sigmoid weights ≈ 0.5 halve the step)")
    meta_lr: float = Field(1e-3, gt=0, description="learning rate β2 of φ (paper: SGD, fixed 1e-3)")
    meta_optimizer: Literal["sgd", "adam"] = Field("sgd", description="optimiser of φ")


def _mlp(width: int, hidden: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten(1)]
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class MetaNet(nn.Module):
    """φ: x -> positive weight. The classifier is referenced, never registered as a submodule
    (so `parameters()` are φ's own and the meta optimiser cannot touch the classifier)."""

    def __init__(self, options: MetaNetOptions, classifier: nn.Module, input_shape: tuple):
        super().__init__()
        self.options = options
        self._classifier = (classifier,)   # a tuple hides it from nn.Module registration
        if options.meta_net == "input":
            width = math.prod(int(d) for d in input_shape)
        else:
            width = self._feature_width(classifier, input_shape)
        self.net = _mlp(width, list(options.hidden))
        device = next(classifier.parameters()).device
        self.to(device)

    @staticmethod
    def _feature_width(classifier: nn.Module, input_shape: tuple) -> int:
        head = classifier.get_classifier()
        if isinstance(head, nn.Linear):
            return head.in_features
        # unknown head: probe once in eval mode (running statistics are read, not written)
        was = classifier.training
        classifier.eval()
        try:
            with torch.no_grad():
                dev = next(classifier.parameters()).device
                f = classifier.forward_head(classifier.forward_features(torch.zeros(2, *input_shape, device=dev)),
                                            pre_logits=True)
        finally:
            classifier.train(was)
        return int(f.flatten(1).shape[1])

    @property
    def classifier(self) -> nn.Module:
        return self._classifier[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Detached classifier features; BatchNorm runs on cloned buffers (running stats untouched)."""
        model = self.classifier
        with torch.no_grad():
            return features_on(model, cloned_buffers(model), x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weights(x)

    def weights(self, x: torch.Tensor, normalize: bool | None = None) -> torch.Tensor:
        """Positive weights, shape (B,), with graph to φ's parameters (`normalize`: None = the option)."""
        h = self.features(x) if self.options.meta_net == "features" else x
        with no_autocast(h.device.type):   # φ's own maths in float32 (it is small)
            z = self.net(full(h)).squeeze(1)
        w = torch.sigmoid(z) if self.options.output == "sigmoid" else nn.functional.softplus(z)
        return mean_one(w) if (self.options.normalize if normalize is None else normalize) else w

    def make_optimizer(self) -> torch.optim.Optimizer:
        o = self.options
        if o.meta_optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=o.meta_lr)
        return torch.optim.SGD(self.parameters(), lr=o.meta_lr)
