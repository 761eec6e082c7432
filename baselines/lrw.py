"""LRW: Learned ReWeighting on the dataset's official validation split (paper §1.1, §2.4).

Follows the bi-level objective of §1.1 with the one-step look-ahead reading of §2.2: the classifier
trains on mean_j φ(x_j) ℓ_j; every Q = 5 steps (`meta_every`) φ takes an SGD step (lr β2 = 1e-3) on
the validation cross-entropy of θ̂ = θ − α ∇θ mean_j φ(x_j) ℓ_j, α = the classifier's current lr.
The meta set is the official `val` split with observed labels (`meta_labels: true` = oracle labels).

Differs from / fills in for the paper: φ's architecture was not recovered — a small MLP on the
flattened input by default, or on the classifier's detached features (`meta_net: features`); sigmoid
output; no per-batch normalisation by default (see `molere.metanet`).
"""
from __future__ import annotations

from molere.config import ConfigError
from molere.lrw import LRWTrainer
from molere.registry import LRW_PANEL, MethodCard, register_method


@register_method("lrw")
class LRW(LRWTrainer):
    """Learned ReWeighting: meta-network φ(x) learned on the official validation split."""

    card = MethodCard(label="LRW", name="Learned ReWeighting", color="#9467bd", panel=LRW_PANEL, rank=1)

    def split(self):
        if self.data.val is None or len(self.data.val) == 0:
            raise ConfigError(f"method 'lrw' needs a dataset with an official validation split; "
                              f"{self.data.name!r} has none (use lrw_random/lrw_hard, which carve one)")
        self.info.update(train_size=len(self.data.train), val_size=len(self.data.val))
        return self.data.train, self.data.val
