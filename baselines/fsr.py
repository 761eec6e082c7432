"""FSR: Fast Sample Re-weighting (Zhang & Pfister, ICCV 2021), core version: L2RW weights from a
head-only look-ahead against a probe set of the best-scored training examples, refilled every epoch.

The score, the defaults and what is left out of the official code: docs/methods/fsr.md.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch.func import functional_call

from molere.data import Batch, ExampleSet
from molere.forward import head_inputs
from molere.precision import full, ieee_fp32, reduced
from molere.registry import register_method

from .l2rw import L2RW, L2RWOptions


def best_per_class(scores: torch.Tensor, scored: torch.Tensor, labels: torch.Tensor, per_class: int,
                   num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Positions of the `per_class` lowest scores of every class (unscored last, ties random), sorted."""
    key = torch.where(scored, scores, torch.full_like(scores, float("inf")))
    perm = torch.randperm(len(key), generator=generator)
    chosen = []
    for c in range(num_classes):
        pos = perm[labels[perm] == c]
        chosen.append(pos[torch.sort(key[pos], stable=True).indices[:per_class]])
    return torch.cat(chosen).sort().values


@register_method("fsr")
class FSR(L2RW):
    """Fast Sample Re-weighting (core): L2RW weights on a head-only look-ahead against a probe set of
    best-scored training examples."""

    class Hparams(L2RWOptions):
        lookahead_scope: Literal["all", "head"] = Field(
            "head", description="look ahead on the head only (FSR's feature sharing) or on all parameters")
        probe_per_class: int = Field(10, gt=0, description="probe-set examples per observed class")
        score_momentum: float = Field(0.9, ge=0, lt=1, description="EMA momentum of the per-example score")
        meta_warmup_epochs: int = Field(2, ge=0, description="epochs of uniform weights before the first probe set "
                                                             "(not train.warmup_epochs, the learning-rate warm-up)")
        renamed = {"warmup_epochs": "meta_warmup_epochs"}

    uses_meta_set = False   # the probe set comes from the training set, refilled every epoch

    def split(self) -> tuple[ExampleSet, None]:
        return self.data.train, None

    def setup(self) -> None:
        super().setup()
        n = len(self.train_set)
        self.scores, self.scored = torch.zeros(n), torch.zeros(n, dtype=torch.bool)
        self._prev_head: dict[str, torch.Tensor] | None = None
        self.probe_purity: float | None = None

    # ---- the probe set -------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        if epoch >= self.hp.meta_warmup_epochs:
            self.refill_probe_set()

    def refill_probe_set(self) -> None:
        pos = best_per_class(self.scores, self.scored, self.train_set.labels, self.hp.probe_per_class,
                             self.data.num_classes, self.generator)
        self._probe_pos = pos
        self.meta_set = self.train_set.subset(pos)
        self.probe_purity = float((self.meta_set.labels == self.meta_set.true_labels).float().mean())

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        if self.meta_set is None:
            return {}
        return {"train/probe_purity": self.probe_purity, "train/probe_size": float(len(self.meta_set))}

    # ---- scores --------------------------------------------------------------------------------
    def _head_params(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.model.get_classifier().named_parameters()}

    @torch.no_grad()
    def update_scores(self, batch: Batch, feats: torch.Tensor, losses: torch.Tensor) -> None:
        """EMA of ℓ_i(head + d) − ℓ_i(head), d = the head's last real update (none at the first step)."""
        now = self._head_params()
        if self._prev_head is not None:
            ahead = {n: 2 * p - self._prev_head[n] for n, p in now.items()}
            head, h, recompute = self.model.get_classifier(), full(feats), reduced(feats.device.type)
            with ieee_fp32(feats.device.type):   # a difference of two nearby losses: both in IEEE float32
                after = self.train_loss(functional_call(head, ahead, (h,)), batch.y, "none")
                if recompute:   # the training forward's ℓ_i ran below float32
                    losses = self.train_loss(functional_call(head, now, (h,)), batch.y, "none")
            score, idx = (after - losses).float().cpu(), batch.idx.cpu()
            m = self.hp.score_momentum
            self.scores[idx] = torch.where(self.scored[idx], m * self.scores[idx] + (1 - m) * score, score)
            self.scored[idx] = True
            noisy = (batch.y != batch.y_true).cpu()
            for name, mask in (("score_clean", ~noisy), ("score_noisy", noisy)):
                if mask.any():
                    self.log_step(**{name: score[mask].mean().item()})
        self._prev_head = {n: p.clone() for n, p in now.items()}

    # ---- the step ------------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> torch.Tensor:
        with head_inputs(self.model) as feats:
            if self.meta_step_due():
                w, losses = self.meta_weights(batch)
                loss = (w * losses).sum()
            else:
                losses = self.train_loss(self.model(batch.x), batch.y, "none")
                loss = losses.mean()
        self.update_scores(batch, feats[0], losses.detach())
        return loss

    def extra_state(self) -> dict:
        return {"scores": self.scores.clone(), "scored": self.scored.clone(), "prev_head": self._prev_head,
                "probe": None if self.meta_set is None else self._probe_pos}

    def load_extra_state(self, state: dict) -> None:
        self.scores, self.scored = state["scores"], state["scored"]
        prev = state["prev_head"]
        self._prev_head = None if prev is None else {n: p.to(self.device) for n, p in prev.items()}
        if state.get("probe") is not None:   # a run resumed mid-epoch keeps the epoch's probe set
            self._probe_pos = state["probe"]
            self.meta_set = self.train_set.subset(self._probe_pos)
            self.probe_purity = float((self.meta_set.labels == self.meta_set.true_labels).float().mean())
