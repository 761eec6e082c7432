"""StableNet (Zhang et al., CVPR 2021): per-batch sample weights that decorrelate the dimensions of the
classifier's (detached) pre-logit features, measured as the weighted covariance of random Fourier features
of every pair of dimensions, together with a memory of saved global features and weights; the classifier
trains on the weighted loss.

Official-code facts (`xxgege/StableNet`), our readings and measurements: docs/methods/stablenet.md.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field

from molere.config import Strict
from molere.data import Batch
from molere.precision import no_autocast
from molere.registry import register_method
from molere.reweighting import weight_stats
from molere.trainer import Trainer

from .fsr import head_inputs
from .recorded import RecordedWeights


def random_fourier_features(h: torch.Tensor, num_f: int, generator: torch.Generator) -> torch.Tensor:
    """(n, d, num_f) features cos + sin of a random phase per dimension, rescaled per example to [0, π/2]."""
    w = torch.randn(num_f, generator=generator).to(h)
    b = (2 * math.pi * torch.rand(h.shape[1], num_f, generator=generator)).to(h)
    mid = h.unsqueeze(2) * w + b
    mid = mid - mid.min(dim=1, keepdim=True).values
    mid = mid / mid.max(dim=1, keepdim=True).values.clamp_min(torch.finfo(h.dtype).tiny)
    mid = mid * (math.pi / 2)
    return math.sqrt(2.0 / num_f) * (torch.cos(mid) + torch.sin(mid))


def decorrelation_loss(features: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Σ over Fourier features of Σ_{a≠b} Cov_p(f_a, f_b)², the covariance under the distribution p."""
    total = features.new_zeros(())
    for i in range(features.shape[2]):
        f = features[:, :, i]
        mean = (p[:, None] * f).sum(0)
        cov = (p[:, None] * f).T @ f - torch.outer(mean, mean)
        sq = cov * cov
        total = total + sq.sum() - sq.diagonal().sum()
    return total


class StableNetHparams(Strict):
    """The weight learner's options (official defaults)."""
    inner_steps: int = Field(20, gt=0, description="SGD iterations of the weight learner per step (epochb)")
    inner_lr: float = Field(1.0, gt=0, description="its learning rate, x0.1 after half the iterations (lrbl)")
    num_f: int = Field(1, gt=0, description="random Fourier features per dimension (num_f)")
    lambda_p: float = Field(70.0, gt=0, description="decorrelation loss divided by this (lambdap)")
    decay_pow: float = Field(2.0, gt=0, description="penalty Σ softmax(a)^decay_pow on the batch (decay_pow)")
    memory: int = Field(128, gt=0, description="rows of saved global features and weights (n_feature)")
    memory_ratio: float = Field(0.9, ge=0, lt=1, description="EMA ratio of the saved rows (presave_ratio)")
    warmup_average_steps: int = Field(10, ge=0, description="first-epoch steps whose features are averaged "
                                                            "into the memory before the EMA starts")


@register_method("stablenet")
class StableNet(RecordedWeights, Trainer):
    """StableNet: batch weights learned to decorrelate the classifier's features (random Fourier features)."""

    Hparams = StableNetHparams

    def split(self):
        self.info.update(train_size=len(self.data.train), meta_size=0, memory_rows=self.hp.memory)
        return self.data.train, None

    def setup(self) -> None:
        self.rff_generator = torch.Generator().manual_seed(self.context.seed * 7919 + 17)
        self.memory_features: torch.Tensor | None = None   # (memory, d), built at the first step
        self.memory_logits = torch.zeros(self.hp.memory, device=self.device)
        self.steps_seen = 0

    def learn_weights(self, h: torch.Tensor) -> torch.Tensor:
        """Batch weights (positive, mean 1) for features h (n, d); updates the memory."""
        hp, n = self.hp, len(h)
        if self.memory_features is None:
            self.memory_features = torch.zeros(hp.memory, h.shape[1], device=h.device)
        a = torch.zeros(n, device=h.device, requires_grad=True)
        opt = torch.optim.SGD([a], lr=hp.inner_lr, momentum=0.9)
        feats = torch.cat([h, self.memory_features])
        with torch.enable_grad(), no_autocast(h.device.type):
            for it in range(hp.inner_steps):
                for g in opt.param_groups:
                    g["lr"] = hp.inner_lr * 0.1 ** (it // max(1, hp.inner_steps // 2))
                p_all = torch.softmax(torch.cat([a, self.memory_logits]), 0)
                rff = random_fourier_features(feats, hp.num_f, self.rff_generator)
                loss = decorrelation_loss(rff, p_all) / hp.lambda_p + torch.softmax(a, 0).pow(hp.decay_pow).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.update_memory(h, a.detach())
        return n * torch.softmax(a.detach(), 0)

    def update_memory(self, h: torch.Tensor, a: torch.Tensor) -> None:
        """Running average over the first steps, then an EMA of the first min(n, memory) rows."""
        k, r = min(len(h), self.hp.memory), self.hp.memory_ratio
        if self.epoch == 0 and self.steps_seen < self.hp.warmup_average_steps:
            t = self.steps_seen
            self.memory_features[:k] = (self.memory_features[:k] * t + h[:k]) / (t + 1)
            self.memory_logits[:k] = (self.memory_logits[:k] * t + a[:k]) / (t + 1)
        else:
            self.memory_features[:k] = self.memory_features[:k] * r + h[:k] * (1 - r)
            self.memory_logits[:k] = self.memory_logits[:k] * r + a[:k] * (1 - r)
        self.steps_seen += 1

    def training_step(self, batch: Batch) -> torch.Tensor:
        with head_inputs(self.model) as feats:
            logits = self.model(batch.x)
        losses = self.train_loss(logits, batch.y, "none")
        w = self.learn_weights(feats[0].flatten(1).float())
        self.record_weights(batch.idx, w)
        self.log_step(**weight_stats(w))
        return (w * losses).mean()

    def extra_state(self) -> dict:
        return {**super().extra_state(), "rff": self.rff_generator.get_state(), "steps_seen": self.steps_seen,
                "memory_features": self.memory_features, "memory_logits": self.memory_logits}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.rff_generator.set_state(state["rff"])
        self.steps_seen = state["steps_seen"]
        self.memory_features, self.memory_logits = state["memory_features"], state["memory_logits"]
