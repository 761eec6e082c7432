"""RHO-loss (Mindermann et al., ICML 2022): from every large batch of n_B candidates the classifier trains on
the n_b with the highest reducible loss ℓ(θ_t) − ℓ(θ_IL); the irreducible-loss (IL) model θ_IL is the
run's architecture trained (ERM, the run's settings) on a hold-out set the classifier never trains on —
the meta set of `meta_source` (default the dataset's val split), kept at the epoch of its lowest loss on a
monitored subset of the training split — and its losses on the training set are computed once (evaluation
mode), as the official code's precomputed losses.

Official-code facts, our readings and measurements: docs/methods/rho_loss.md.
"""
from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import functional_call

from molere.data import Batch, ExampleSet, TaskData
from molere.lookahead import cloned_buffers
from molere.registry import METHODS, register_method
from molere.reweighting import MetaSourceHparams, meta_source_split
from molere.splits import random_subset
from molere.trainer import RunContext, Trainer

from .recorded import RecordedWeights


def top_reducible(losses: torch.Tensor, il_losses: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the k largest reducible losses ℓ − ℓ_IL (ties: the earlier position first)."""
    return torch.argsort(losses - il_losses, descending=True, stable=True)[:k]


def cat_batches(a: Batch, b: Batch) -> Batch:
    return Batch(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), torch.cat([a.idx, b.idx]),
                 torch.cat([a.y_true, b.y_true]))


class RhoHparams(MetaSourceHparams):
    """The hold-out (`meta_source`), the selection ratio n_b / n_B and where the n_B candidates come from."""
    select_fraction: float = Field(0.1, gt=0, le=1, description="n_b / n_B (official: 32 of 320)")
    candidates: Literal["extra", "batch"] = Field(
        "extra", description="extra: train on batch_size examples chosen from batch_size / select_fraction "
                             "candidates (ERM's steps and step size); batch: the step's batch is n_B and "
                             "n_b = select_fraction of it (the official code with batch_size 320)")
    il_epochs: int | None = Field(None, gt=0, description="epochs of the IL model on the hold-out; None: as many "
                                                          "optimiser steps as the classifier's run")
    selection_mode: Literal["train", "eval"] = Field("train", description="BatchNorm/dropout mode of the "
                                                                          "selection forward (official: train)")
    il_checkpoint: Literal["best_train_loss", "final"] = Field(
        "best_train_loss", description="IL model kept: the epoch with the lowest loss on a fixed random subset of "
                                       "the training split, which it never trains on (official: lowest held-out loss; "
                                       "its monitored split is the test set, never used here), or its final epoch")
    il_monitor_size: int = Field(1000, gt=0, description="training examples monitored (best_train_loss)")
    added = ("meta_labels",)      # trial ids stored before it stay valid
    meta_labels: Literal["observed", "true"] = Field(
        "observed", description="labels the IL model trains on: observed, or true (the official label-noise "
                                "configs corrupt the training set only, the hold-out stays clean)")


@register_method("rho_loss")
class RhoLoss(RecordedWeights, Trainer):
    """RHO-loss: train on the candidates with the highest reducible loss against an IL model on a hold-out set."""

    Hparams = RhoHparams
    uses_meta_set = True   # the hold-out set of the IL model
    weights_recorded = "each training example's selection rate (selected / times a candidate)"

    def split(self):
        train, holdout = meta_source_split(self.data, self.hp, self.context.seed)
        if self.hp.meta_labels == "true":
            holdout = holdout.with_labels(holdout.true_labels)
        self.info.update(train_size=len(train), meta_source=self.hp.meta_source, meta_size=len(holdout),
                         meta_labels=self.hp.meta_labels,
                         holdout_role="IL model training set (never trained on by the classifier)")
        return train, holdout

    def setup(self) -> None:
        self.il_losses = self.irreducible_losses(self.train_set, self.meta_set)
        n = len(self.train_set)
        self.selected_count, self.candidate_count = torch.zeros(n), torch.zeros(n)
        b = self.cfg.batch_size
        n_big = b if self.hp.candidates == "batch" else int(round(b / self.hp.select_fraction))
        self.n_select = max(1, int(b * self.hp.select_fraction)) if self.hp.candidates == "batch" else b
        self.n_candidates = min(n_big, len(self.train_set))
        self.info.update(candidates_per_step=self.n_candidates, selected_per_step=self.n_select,
                         il_epochs=self.il_epochs)

    # ---- the IL model: the one place the hold-out set is used -------------------------------------
    @property
    def il_epochs(self) -> int:
        """`il_epochs`, or the epochs over the hold-out that take as many steps as the classifier's run."""
        if self.hp.il_epochs is not None:
            return self.hp.il_epochs
        b = self.cfg.batch_size
        steps = self.cfg.epochs * -(-len(self.train_set) // b)
        return max(1, -(-steps // -(-len(self.meta_set) // b)))

    def irreducible_losses(self, train: ExampleSet, holdout: ExampleSet) -> torch.Tensor:
        """ℓ(θ_IL) of every training example (observed labels, evaluation mode), θ_IL trained on `holdout` only
        and kept at its `il_checkpoint` epoch."""
        ctx = self.context
        task = TaskData(f"{self.data.name}-holdout", train=holdout, test=holdout, num_classes=self.data.num_classes,
                        input_shape=self.data.input_shape)
        cfg = self.cfg.model_copy(update={"epochs": self.il_epochs})
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(ctx.seed)
            il = METHODS.get(METHODS.reference())(ctx.model_factory(), task, cfg, None, RunContext(
                seed=ctx.seed, device=ctx.device, model_factory=ctx.model_factory))
            self.train_il_model(il, self.monitor_set(train), cfg.epochs)
        return F.cross_entropy(il.logits(train), train.labels, reduction="none")

    def monitor_set(self, train: ExampleSet) -> ExampleSet | None:
        """The fixed random training examples the IL checkpoint is selected on (None: keep the final epoch)."""
        if self.hp.il_checkpoint == "final":
            return None
        n = min(self.hp.il_monitor_size, len(train))
        return train.subset(random_subset(len(train), n, self.context.seed, "numpy_choice"))

    def train_il_model(self, il: Trainer, monitor: ExampleSet | None, epochs: int) -> None:
        """Train `il` for `epochs`; with a monitor set, restore the epoch of its lowest mean loss there."""
        best, state, losses = float("inf"), None, []
        for epoch in range(epochs):
            il.train_epoch()
            if monitor is not None:
                losses.append(F.cross_entropy(il.logits(monitor), monitor.labels).item())
                if losses[-1] < best:
                    best, state = losses[-1], copy.deepcopy(il.model.state_dict())
                    self.info["il_best_epoch"] = epoch + 1
        if state is not None:
            il.model.load_state_dict(state)
            self.info.update(il_monitor_loss=best, il_final_monitor_loss=losses[-1], il_monitor_size=len(monitor))

    # ---- selection -----------------------------------------------------------------------------
    @torch.no_grad()
    def candidate_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """ℓ(θ_t) of the candidates; BatchNorm on cloned buffers (running statistics untouched)."""
        was = self.model.training
        self.model.train(self.hp.selection_mode == "train")
        try:
            tensors = {**dict(self.model.named_parameters()), **cloned_buffers(self.model)}
            return F.cross_entropy(functional_call(self.model, tensors, (x,)).float(), y, reduction="none")
        finally:
            self.model.train(was)

    def select(self, batch: Batch) -> Batch:
        """The n_b candidates with the highest reducible loss (counts kept for the diagnostics)."""
        if self.hp.candidates == "extra" and self.n_candidates > len(batch.y):
            extra = next(self.stream("candidates", "train_set", self.n_candidates - len(batch.y))).to(self.device)
            new = ~torch.isin(extra.idx, batch.idx)   # each example at most once among a step's candidates
            batch = cat_batches(batch, Batch(extra.x[new], extra.y[new], extra.idx[new], extra.y_true[new]))
        losses = self.candidate_losses(batch.x, batch.y)
        il = self.il_losses[batch.idx.cpu()].to(losses.device)
        keep = top_reducible(losses, il, min(self.n_select, len(batch.y)))
        idx = batch.idx.cpu()
        self.candidate_count.index_add_(0, idx, torch.ones(len(idx)))
        self.selected_count.index_add_(0, idx[keep.cpu()], torch.ones(len(keep)))
        red = losses - il
        self.log_step(reducible_selected=red[keep].mean().item(), reducible_candidates=red.mean().item(),
                      selected_noisy=(batch.y[keep] != batch.y_true[keep]).float().mean().item())
        return Batch(batch.x[keep], batch.y[keep], batch.idx[keep], batch.y_true[keep])

    def training_step(self, batch: Batch) -> torch.Tensor:
        chosen = self.select(batch)
        return self.train_loss(self.model(chosen.x), chosen.y)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        self.info.update(candidates_seen=int(self.candidate_count.sum()), selected_seen=int(self.selected_count.sum()))
        return {}

    def recorded_weights(self) -> tuple[np.ndarray, np.ndarray]:
        seen = torch.nonzero(self.candidate_count > 0).flatten()
        return seen.numpy(), (self.selected_count[seen] / self.candidate_count[seen]).numpy()

    def extra_state(self) -> dict:
        return {"selected": self.selected_count.clone(), "candidates": self.candidate_count.clone()}

    def load_extra_state(self, state: dict) -> None:
        self.selected_count, self.candidate_count = state["selected"], state["candidates"]
