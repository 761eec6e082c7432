"""GDW: Generalized Data Weighting (Chen et al., NeurIPS 2021): class-level weights λ_ij on the per-class
components (p_ij − y_ij)·∂z_ij of each example's gradient. Every step they start from MWN's weight V(ℓ_i)
in every class, take one clipped, normalised step against ∂L_meta/∂λ of the shared look-ahead, keep the
zero-mean constraint Σ_j λ_ij (p_ij − y_ij) = 0 and weight the real step; V learns as in MWN.

Official-code facts (`GGchen1997/GDW-NIPS2021`), our readings and measurements: docs/methods/gdw.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from molere.data import Batch
from molere.precision import full
from molere.registry import register_method
from molere.reweighting import mean_one, weight_stats

from .mwn import MWN


class ClassTerms:
    """Per-class training terms ℓ_ij = c_ij · z_ij, c = (clamped p − smoothed one-hot) fixed at the first
    call, so ∇θ Σ_ij λ_ij ℓ_ij = Σ_ij λ_ij (p_ij − y_ij) ∇z_ij in every hypergradient mode; with λ ≡ 1 its
    gradient is cross-entropy's."""

    def __init__(self, p_max: float, label_smoothing: float = 0.0):
        self.p_max, self.label_smoothing = p_max, label_smoothing
        self.coef = self.p = self.ce = None

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = full(logits)
        if self.coef is None:
            with torch.no_grad():
                c = z.shape[1]
                target = F.one_hot(y, c).to(z.dtype) * (1 - self.label_smoothing) + self.label_smoothing / c
                self.p = torch.softmax(z, 1).clamp(0, self.p_max)
                self.coef = self.p - target
                self.ce = F.cross_entropy(z, y, reduction="none", label_smoothing=self.label_smoothing)
        return self.coef * z


def zero_mean(lam: torch.Tensor, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """λ with its true-class entry set so that Σ_j λ_ij (p_ij − 1[j = y_i]) = 0 (graph kept)."""
    rows = torch.arange(len(y), device=y.device)
    p_y = p[rows, y]
    others = (lam * p).sum(1) - lam[rows, y] * p_y
    return lam.index_put((rows, y), others / (1 - p_y))


def class_step(lam: torch.Tensor, grad: torch.Tensor, outer_lr: float, clip: float) -> torch.Tensor:
    """GDW's update λ − clip(outer_lr · g / Σ|g|, ±clip) (no step when g = 0)."""
    total = grad.abs().sum()
    if total == 0:
        return lam
    return lam - (outer_lr * grad / total).clamp(-clip, clip)


@register_method("gdw")
class GDW(MWN):
    """Generalized Data Weighting: MWN's weights refined per class by one clipped meta-gradient step."""

    class Hparams(MWN.Hparams):
        outer_lr: float = Field(100.0, gt=0, description="step of the class-level weights (official: 100 "
                                                         "CIFAR-10, 1000 CIFAR-100)")
        clip: float = Field(0.2, gt=0, description="per-entry bound of that step (official: 0.2)")
        p_max: float = Field(0.999, gt=0, lt=1, description="probabilities clamped to this (official: 0.999)")

    def class_weights(self, terms: ClassTerms, y: torch.Tensor) -> torch.Tensor:
        """λ (B, C): V(ℓ_i) (mean 1 with `normalize`) in every class, zero-mean constrained; graph to V."""
        v = self.weight_net(terms.ce).to(terms.p.dtype)
        v = mean_one(v) if self.hp.normalize else v
        return zero_mean(v[:, None].expand(-1, terms.p.shape[1]), terms.p, y)

    def class_level_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """V's meta step and the class-level weights of the real step: (λ, the terms ℓ_ij, mean CE)."""
        xv, yv = self.next_meta_batch()
        terms = ClassTerms(self.hp.p_max, self.cfg.label_smoothing)
        hg = self.lookahead.hypergradient(batch.x, batch.y, val_x=xv, val_y=yv, lr=self.lookahead_lr(),
                                          weight_fn=lambda _: self.class_weights(terms, batch.y), losses_fn=terms)
        params = self.meta_parameters()
        for p, g in zip(params, hg.backward_to(params)):
            p.grad = g
        self.meta_opt.step()
        self.meta_opt.zero_grad(set_to_none=True)
        hg.commit_buffers()
        lam = class_step(hg.weights.detach(), hg.dw, self.hp.outer_lr, self.hp.clip)
        w = zero_mean(lam.clamp(1e-6, 1e6), terms.p, batch.y)
        spread = (w - hg.weights.detach()).abs().mean().item()
        self.log_step(meta_val_loss=hg.val_loss.item(), class_weight_spread=spread)
        return w, hg.train_losses, terms.ce.mean()

    def training_step(self, batch: Batch) -> torch.Tensor:
        if not self.meta_step_due():   # between meta steps (meta_every > 1): MWN's per-example weights
            return super().training_step(batch)
        w, terms, ce = self.class_level_step(batch)
        rows = torch.arange(len(batch.y), device=w.device)
        self.log_step(**weight_stats(w[rows, batch.y]))
        surrogate = (w * terms).sum() / len(batch.y)
        return surrogate - surrogate.detach() + ce   # the surrogate's gradient, the CE's value (train/loss)
