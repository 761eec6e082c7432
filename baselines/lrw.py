"""LRW: Learned ReWeighting (paper §1.1) with the dataset's official validation split as meta set.

Paper, open choices (φ's architecture, normalisation, order) and measurements: docs/methods/lrw.md.
"""
from __future__ import annotations

from molere.data import require_val
from molere.lrw_trainer import LRWTrainer
from molere.registry import register_method


@register_method("lrw")
class LRW(LRWTrainer):
    """Learned ReWeighting: meta-network φ(x) learned on the official validation split."""

    def split(self):
        val = require_val(self.data, "method 'lrw'", "use lrw_random or lrw_hard, which carve one from train")
        self.info.update(train_size=len(self.data.train), val_size=len(val))
        return self.data.train, val
