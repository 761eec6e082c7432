"""MAPLE (Zhou et al., ICML 2022), online reading: one learnable weight θ_i ≥ 0 per training example (start
1); the classifier trains on the θ-weighted loss (θ / its batch mean) while every step θ takes a hypergradient
step so that the look-ahead classifier lowers an out-of-distribution objective — IRMv1's penalty, REx's
variance or group DRO's worst loss over environments — on another batch of the training data itself
(no extra data). Environments: the dataset's groups, else the observed classes.

Official-code facts (`x-zho14/MAPLE`), our readings and measurements: docs/methods/maple.md.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from molere.data import Batch
from molere.forward import BatchOutputs
from molere.registry import register_method
from molere.reweighting import MetaHparams, ReweightingStepHparams, ReweightingTrainer


def environment_losses(logits: torch.Tensor, y: torch.Tensor, env: torch.Tensor) -> tuple[torch.Tensor, list]:
    """(mean CE of every environment present, its positions)."""
    groups = [torch.nonzero(env == e).flatten() for e in torch.unique(env)]
    return torch.stack([F.cross_entropy(logits[g], y[g]) for g in groups]), groups


def ood_objective(logits: torch.Tensor, y: torch.Tensor, env: torch.Tensor, kind: str, erm: float = 0.0):
    """The outer loss: IRMv1's penalty mean_e (∂/∂s L_e(s·z) at s = 1)², REx's variance of the L_e or
    group DRO's max_e L_e; plus `erm` × the mean CE."""
    per_env, groups = environment_losses(logits, y, env)
    if kind == "rex":
        out = (per_env - per_env.mean()).pow(2).mean()
    elif kind == "group_dro":
        out = per_env.max()
    else:   # d/ds CE(s·z, y) at s = 1 is Σ_k (p_k − 1[k = y]) z_k, per example
        resid = torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)
        slope = (resid * logits).sum(1)
        out = torch.stack([slope[g].mean() for g in groups]).pow(2).mean()
    return out + erm * F.cross_entropy(logits, y) if erm else out


@register_method("maple")
class MAPLE(ReweightingTrainer):
    """MAPLE: per-example training weights learned by hypergradient to minimise an OOD objective on the
    training data."""

    class Hparams(MetaHparams, ReweightingStepHparams):
        objective: Literal["irm", "rex", "group_dro"] = Field("irm", description="outer OOD objective "
                                                                                 "(official default: irmv1)")
        environments: Literal["auto", "groups", "labels"] = Field(
            "auto", description="environments of the objective: the dataset's groups, the observed classes, "
                                "or auto = groups when the dataset has them, else classes")
        outer_erm: float = Field(0.0, ge=0, description="weight of a mean-CE term in the outer loss (official: 0)")
        weight_lr: float = Field(0.05, gt=0, description="Adam learning rate of the weights θ (official theta_lr)")
        weight_clip: float = Field(3.0, gt=0, description="gradient-norm clip of θ's step (official: 3)")

    def split(self):
        env = self.hp.environments
        if env == "auto":
            env = "groups" if self.data.train.groups is not None else "labels"
        if env == "groups" and self.data.train.groups is None:
            from molere.config import ConfigError
            raise ConfigError(f"method.hparams.environments: 'groups' needs a dataset with groups; "
                              f"{self.data.name!r} has none (use labels or auto)")
        self.env_kind = env
        self.info.update(train_size=len(self.data.train), meta_size=0, meta_source="train (outer objective on "
                         "training batches)", environments=env)
        return self.data.train, self.data.train   # the outer objective is evaluated on training data

    def setup(self) -> None:
        self.theta = nn.Parameter(torch.ones(len(self.train_set), device=self.device))

    def environment(self, batch: Batch) -> torch.Tensor:
        if self.env_kind == "groups":
            return self.train_set.groups[batch.idx.cpu()].to(batch.y.device)
        return batch.y

    def example_weights(self, batch: Batch, out: BatchOutputs) -> torch.Tensor:
        """θ of the batch over its mean (the mean detached: the official code's θ / Σθ.detach(), times B)."""
        t = self.theta[batch.idx]
        return t / t.detach().mean().clamp_min(1e-12)

    def raw_weights(self, batch: Batch, out: BatchOutputs) -> torch.Tensor:
        return self.theta[batch.idx].detach()

    def meta_parameters(self) -> list[nn.Parameter]:
        return [self.theta]

    def meta_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SparseAdam([self.theta], lr=self.hp.weight_lr)

    def meta_step(self, batch: Batch) -> BatchOutputs:
        outer = next(self.stream("meta", "meta_set", self.hp.meta_batch_size)).to(self.device)
        env = self.environment(outer)
        hg = self.lookahead.hypergradient(
            batch.x, batch.y, val_x=outer.x, val_y=outer.y, lr=self.lookahead_lr(),
            weight_fn=lambda out: self.example_weights(batch, out),
            val_loss_fn=lambda z, y: ood_objective(z, y, env, self.hp.objective, self.hp.outer_erm))
        (g,) = hg.backward_to([self.theta])
        self.apply_weight_step(batch.idx, g[batch.idx])
        hg.commit_buffers()
        self.log_step(meta_val_loss=hg.val_loss.item())
        self._last_meta_weights = hg.weights.detach()
        return hg.outputs

    def apply_weight_step(self, idx: torch.Tensor, grad: torch.Tensor) -> None:
        """SparseAdam on the batch's θ (clipped to norm `weight_clip`), then θ ← max(θ, 0)."""
        norm = grad.norm()
        if norm > self.hp.weight_clip:
            grad = grad * (self.hp.weight_clip / norm)
        self.theta.grad = torch.sparse_coo_tensor(idx.view(1, -1), grad, self.theta.shape, check_invariants=False)
        self.meta_opt.step()
        self.meta_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.theta.clamp_(min=0)
