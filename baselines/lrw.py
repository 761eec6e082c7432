"""LRW: Learned ReWeighting (paper §1.1) with the dataset's official validation split as meta set.

Paper, open choices (φ's architecture, normalisation, order) and measurements: docs/methods/lrw.md.
"""
from __future__ import annotations

from molere.config import ConfigError
from molere.lrw_trainer import LRWTrainer
from molere.registry import register_method


@register_method("lrw")
class LRW(LRWTrainer):
    """Learned ReWeighting: meta-network φ(x) learned on the official validation split."""

    def split(self):
        if self.data.val is None or len(self.data.val) == 0:
            raise ConfigError(f"method 'lrw' needs a dataset with an official validation split; "
                              f"{self.data.name!r} has none (use lrw_random/lrw_hard, which carve one)")
        self.info.update(train_size=len(self.data.train), val_size=len(self.data.val))
        return self.data.train, self.data.val
