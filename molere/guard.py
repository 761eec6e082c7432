"""The divergence guard of every trial: marks it diverged instead of letting it count as a result.

After every epoch (`TrainConfig.guard`, `molere.config.GuardConfig`) a trial is diverged when, for
`patience` consecutive epochs,
  - its training loss exceeds `loss_ratio` times the first epoch's, or
  - one class takes `collapse_share` of the predictions on a fixed sample of training examples (the guard
    examples) while holding under half that share of their labels, after an earlier epoch was `peak_margin`
    above chance (a model that has not learned yet, e.g. a long tail's first steps, has not collapsed), or
  - its accuracy on the guard examples (observed labels) is within `chance_margin` of chance (the largest
    label share) after an earlier epoch was `peak_margin` above it;
and at once when a training loss is not finite. Only training data is looked at, never test or selection
data, so the guard cannot select on what is reported. Defaults and measurements: docs/guard.md.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .config import GuardConfig
from .data import ExampleSet, seeded
from .splits import random_subset

CRITERIA = ("loss", "collapse", "chance")


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite (before it reaches the weights)."""


@dataclass
class Divergence:
    epoch: int      # the epoch (1-based) at which the trial was judged diverged
    reason: str
    criterion: str  # "nonfinite", "loss", "collapse" or "chance"


class DivergenceGuard:
    """Watches one trainer's epochs; `divergence` is set once it diverged, `stopped` says to end the loop."""

    def __init__(self, cfg: GuardConfig, train: ExampleSet, num_classes: int, seed: int):
        self.cfg, self.num_classes = cfg, num_classes
        n = min(cfg.examples, len(train)) if cfg.enabled else 0
        self.examples = train.subset(random_subset(len(train), n, seed, "torch")) if n else None
        self.label_share = np.bincount(self.examples.labels.numpy(), minlength=num_classes) / n if n else None
        self.chance = float(self.label_share.max()) if n else None   # accuracy of always the largest class
        self.first_loss: float | None = None
        self.best_acc = float("-inf")
        self.streaks = dict.fromkeys(CRITERIA, 0)
        self.divergence: Divergence | None = None

    @property
    def stopped(self) -> bool:
        d = self.divergence
        return d is not None and (self.cfg.stop or d.criterion == "nonfinite")

    @contextmanager
    def catching_nonfinite(self, epoch: int):
        """A `NonFiniteLossError` inside the block marks the trial diverged at `epoch` and stops it, whatever
        `stop` says (disabled guard: it propagates, the trial fails)."""
        try:
            yield
        except NonFiniteLossError as exc:
            if not self.cfg.enabled:
                raise
            if self.divergence is None:
                self.divergence = Divergence(epoch, str(exc), "nonfinite")

    def _predictions(self, trainer) -> np.ndarray:
        with seeded(0):   # the pass draws nothing from the run's random streams (bit-for-bit as unguarded)
            return trainer.logits(self.examples).argmax(1).numpy()

    def after_epoch(self, trainer, epoch: int, train_loss: float) -> dict[str, float]:
        """Judge the epoch that just ended; returns its guard metrics (logged with the epoch's)."""
        if not self.cfg.enabled:
            return {}
        if self.first_loss is None:
            self.first_loss = train_loss
        ratio = train_loss / self.first_loss if self.first_loss > 0 else float("nan")
        out, found = {"guard/loss_ratio": ratio}, {"loss": bool(ratio > self.cfg.loss_ratio)}
        if self.examples is not None:
            preds = self._predictions(trainer)
            share = np.bincount(preds, minlength=self.num_classes) / len(preds)
            top = int(share.argmax())
            acc = float((preds == self.examples.labels.numpy()).mean())
            learned = self.best_acc >= self.chance + self.cfg.peak_margin   # at an earlier epoch
            found["collapse"] = bool(share[top] >= self.cfg.collapse_share
                                     and self.label_share[top] < self.cfg.collapse_share / 2 and learned)
            found["chance"] = bool(acc <= self.chance + self.cfg.chance_margin and learned)
            self.best_acc = max(self.best_acc, acc)
            out.update({"guard/top_class_share": float(share[top]), "guard/train_acc_observed": acc})
        for name in CRITERIA:
            self.streaks[name] = self.streaks[name] + 1 if found.get(name) else 0
        hit = next((c for c in CRITERIA if self.streaks[c] >= self.cfg.patience), None)
        if hit is not None and self.divergence is None:
            self.divergence = Divergence(epoch, self._reason(hit, out), hit)
        return out

    def _reason(self, criterion: str, out: dict) -> str:
        k = self.cfg.patience
        span = f"for {k} epoch{'s' * (k > 1)}"
        if criterion == "loss":
            return (f"training loss {out['guard/loss_ratio']:.2f}x its first epoch's ({self.first_loss:.3f}) "
                    f"{span} (limit {self.cfg.loss_ratio:g}x)")
        if criterion == "collapse":
            return f"one class took {out['guard/top_class_share']:.0%} of the guard examples' predictions {span}"
        return (f"accuracy on the guard examples {out['guard/train_acc_observed']:.3f} at chance ({self.chance:.3f}) "
                f"{span}, after reaching {self.best_acc:.3f}")

    def state_dict(self) -> dict:
        d = self.divergence
        return {"first_loss": self.first_loss, "best_acc": self.best_acc, "streaks": dict(self.streaks),
                "divergence": None if d is None else [d.epoch, d.reason, d.criterion]}

    def load_state_dict(self, state: dict | None) -> None:
        if not state:
            return
        self.first_loss, self.best_acc = state["first_loss"], state["best_acc"]
        self.streaks.update(state["streaks"])
        self.divergence = None if state["divergence"] is None else Divergence(*state["divergence"])
