"""MOLERE's splitter Θ(x, y) -> P(z | x, y), its losses, and how a hard split is drawn from it
(z = 1 `TRAIN`, z = 0 `VALIDATION`). Class indices, architectures: docs/design/splitter.md.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from .config import Strict
from .metanet import MetaNet
from .precision import full, no_autocast

VALIDATION, TRAIN = 0, 1   # index of z in the splitter's 2-way softmax (Eq. 11 / LS: 1 = train)
EPS = 1e-6   # probability floor (float32-safe: 1 − EPS < 1)


class SplitterOptions(Strict):
    """How Θ is built, optimised and trained (loss weights of §2.2-2.3)."""
    splitter_net: Literal["features", "input"] = Field(
        "features", description="Θ on the classifier's detached features (LS, paper) or on the flattened input")
    splitter_head: Literal["concat", "per_class"] = Field(
        "concat", description="features ⊕ one-hot(y) (LS) or one score pair per label (features ⊗ one-hot(y))")
    splitter_hidden: int | None = Field(
        None, ge=0, description="hidden width of Θ; None = 128 for input (small MLP), 0 = linear for features (LS)")
    splitter_init: Literal["zero", "default"] = Field(
        "zero", description="Θ's output layer starts at zero (an untrained Θ prefers no example, so the split ranks "
                            "by what it learned) or with PyTorch's default random init (whose ranking is arbitrary)")
    splitter_lr: float = Field(1e-3, gt=0, description="learning rate β1 of Θ (paper §2.4: SGD, fixed 1e-3)")
    splitter_optimizer: Literal["sgd", "adam"] = Field("sgd", description="optimiser of Θ (paper: SGD; LS: Adam)")
    w_gap: float = Field(1.0, ge=0, description="weight of CE(P_Θ, classifier correctness) (Eq. 11)")
    lambda_val: float = Field(1.0, ge=0, description="weight λ_val of the maximised validation loss (Eq. 11's −ℓ_val)")
    w_ratio: float = Field(1.0, ge=0, description="weight of the split-size KL to δ (§2.3; unknown, LS uses 1)")
    w_bal: float = Field(1.0, ge=0, description="weight of the label-balance KL (§2.3; unknown, LS uses 1)")
    val_term: Literal["membership", "lookahead"] = Field(
        "membership", description="how −ℓ_val depends on Θ: §7.2 option A (membership-weighted, cheap, default) "
                                  "or B (through the look-ahead's training weights (1−p)·g_φ)")
    val_term_on: Literal["val", "pool"] = Field(
        "val", description="option A's batch: current validation split (Eq. 11 sums over it) or the whole pool")
    gap_on: Literal["val", "pool"] = Field(
        "val", description="batch of the correctness CE: validation split only (LS, Eq. 11) or the whole pool")


# ---------------------------------------------------------------------------- losses
def split_size_kl(p_train: torch.Tensor, target_train: float) -> torch.Tensor:
    """KL([t, 1−t] ‖ [m̄, 1−m̄]) / 2 with m̄ = mean P(train): 0 exactly at the target fraction t (§2.3)."""
    m = p_train.mean().clamp(EPS, 1 - EPS)
    cur = torch.stack([m, 1 - m])
    tar = torch.tensor([target_train, 1 - target_train], dtype=cur.dtype, device=cur.device)
    return (torch.xlogy(tar, tar) - tar * cur.log()).sum() / 2


def label_balance_kl(p_train: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KL(p(y) ‖ p(y|train))/C + KL(p(y) ‖ p(y|val))/C over the C classes present in the batch (§2.3).

    Classes are indexed by their actual ids (`torch.unique`), so batches lacking classes are handled;
    the conditional distributions are ε-guarded, so the value is always finite."""
    present, pos = torch.unique(y, return_inverse=True)
    onehot = F.one_hot(pos, len(present)).to(p_train.dtype)
    prior = onehot.mean(0)

    def kl_from_prior(member: torch.Tensor) -> torch.Tensor:
        mass = onehot.T @ member
        cond = mass / mass.sum().clamp_min(EPS)
        return (torch.xlogy(prior, prior) - prior * cond.clamp_min(EPS).log()).sum()

    return (kl_from_prior(p_train) + kl_from_prior(1 - p_train)) / len(present)


def membership_weighted_loss(p_val: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Σ p_i ℓ_i / Σ p_i: the validation loss of the soft validation split (§7.2 option A; ℓ detached)."""
    return (p_val * losses.detach()).sum() / p_val.sum().clamp_min(EPS)


# ---------------------------------------------------------------------------- the network
def frozen_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of the classifier in eval mode, without gradient (running stats untouched)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            h = model.forward_head(model.forward_features(x), pre_logits=True)
            return h.flatten(1), model.get_classifier()(h)
    finally:
        model.train(was)


class Splitter(nn.Module):
    """Θ: (x, y) -> 2-way logits (index `VALIDATION` / `TRAIN`). The classifier is referenced, not owned."""

    def __init__(self, options: SplitterOptions, classifier: nn.Module, input_shape: tuple, num_classes: int):
        super().__init__()
        self.options, self.num_classes = options, num_classes
        self._classifier = (classifier,)   # a tuple keeps it out of this module's parameters
        on_input = options.splitter_net == "input"
        width = math.prod(int(d) for d in input_shape) if on_input else MetaNet._feature_width(classifier, input_shape)
        hidden = options.splitter_hidden if options.splitter_hidden is not None else (128 if on_input else 0)
        concat = options.splitter_head == "concat"
        layers: list[nn.Module] = []
        width += num_classes if concat else 0
        if hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 2 if concat else 2 * num_classes))
        self.net = nn.Sequential(*layers)
        if options.splitter_init == "zero":
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)
        self.to(next(classifier.parameters()).device)

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, class logits) of the frozen classifier (see `frozen_forward`)."""
        return frozen_forward(self._classifier[0], x)

    def forward(self, x: torch.Tensor, y: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Split logits (B, 2); `features` = the classifier's features of x (computed if None)."""
        if self.options.splitter_net == "input":
            h = x.flatten(1)
        else:
            h = features if features is not None else self.classify(x)[0]
        with no_autocast(h.device.type):   # Θ's maths in float32 under a training autocast (it is small)
            h = full(h)
            if self.options.splitter_head == "concat":
                return self.net(torch.cat([h, F.one_hot(y, self.num_classes).to(h.dtype)], 1))
            out = self.net(h).view(len(y), self.num_classes, 2)
            return out[torch.arange(len(y), device=y.device), y]

    def make_optimizer(self) -> torch.optim.Optimizer:
        o = self.options
        if o.splitter_optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=o.splitter_lr)
        return torch.optim.SGD(self.parameters(), lr=o.splitter_lr)


# ---------------------------------------------------------------------------- hard split
def apportion(total: int, sizes: list[int]) -> list[int]:
    """Split `total` over groups in proportion to `sizes` (largest-remainder method; sums to `total`)."""
    n = sum(sizes)
    quota = [total * s / n for s in sizes]
    out = [int(q) for q in quota]
    for i in sorted(range(len(sizes)), key=lambda i: -(quota[i] - out[i]))[:total - sum(out)]:
        out[i] += 1
    return out


def choose_validation(p_val: torch.Tensor, cap: int, fill: str = "rank", rule: str = "threshold",
                      generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Positions of the validation split (sorted) from P(val) over the pool.

    Candidates are P(val) > 0.5 (`rule="threshold"`, the student's reading) or z ~ Bernoulli(P(val))
    (`"sample"`, LS). Over `cap` candidates the top `cap` by P(val) are kept; under it, `fill="rank"`
    tops up by P(val) ranking (§7.3) and `"none"` keeps the candidates only. With `labels`, the rule runs
    within every class c with a cap ≈ cap · n_c / n (largest remainders, summing to `cap`), so the split
    keeps the pool's class shares."""
    p_val = p_val.detach().float().cpu()
    chosen = p_val > 0.5 if rule == "threshold" else torch.bernoulli(p_val, generator=generator).bool()
    if labels is None:
        groups, caps = [torch.arange(len(p_val))], [cap]
    else:
        labels = labels.cpu()
        groups = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
        caps = apportion(cap, [len(g) for g in groups])
    picked = []
    for pos, k in zip(groups, caps):
        n = k if fill == "rank" else min(int(chosen[pos].sum()), k)
        order = torch.argsort(p_val[pos] + 2.0 * chosen[pos].float(), descending=True, stable=True)
        picked.append(pos[order[:n]])
    return torch.cat(picked).sort().values
