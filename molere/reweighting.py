"""Shared machinery of meta-reweighting methods: options, the meta-set stream, the meta step.

A `ReweightingTrainer` trains the classifier on Σ w_i ℓ_i / B, where w = g_φ(·) is a learned weighting
function; every `meta_every` classifier steps it updates φ on the look-ahead's validation loss
(`molere.lookahead`). Subclasses build φ in `setup()` and say what g_φ is (`example_weights`,
`meta_parameters`, `meta_optimizer`); the meta set is `meta_source`'s unless `split()` says otherwise.
`MetaTrainer` is the part without φ (L2RW, FSR: weights from the look-ahead itself).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from .config import ConfigError, Strict
from .data import Batch, ExampleSet, TaskData
from .diagnostics import UNTRAINED_DISPLACEMENT, aligned, relative_displacement, weight_diagnostics
from .lookahead import LookAhead
from .trainer import Outputs, Trainer


class MetaHparams(Strict):
    """Options every meta method shares (each one a choice the papers make differently)."""
    meta_every: int = Field(1, ge=1, description="meta update every Q classifier steps")
    meta_batch_size: int = Field(128, gt=0, description="validation/meta batch size of a meta step")
    lookahead_scope: Literal["all", "head"] = Field("all", description="look ahead on all parameters or the head only (FSR)")
    lookahead_lr: float | None = Field(None, gt=0, description="virtual step size α; None = classifier's current lr")
    weights_after_meta: bool = Field(True, description="real step uses the weights after the meta update (L2RW/MWN order)")
    meta_labels: Literal["observed", "true"] = Field("observed", description="labels of the meta set: observed (realistic) or true (oracle)")
    val_bn: Literal["batch", "running"] = Field("batch", description="BatchNorm statistics of the look-ahead's validation forward")
    hypergrad: Literal["reverse", "forward", "finite_diff"] = Field(
        "reverse", description="meta-gradient: exact by second-order reverse mode or first-order + jvp (less memory), "
                               "or approximate by a central difference along ∇L_val (DARTS; fastest)")
    fd_eps: float = Field(0.01, gt=0, description="finite_diff step: ε = fd_eps / ‖∇L_val‖ (DARTS' 0.01)")
    fd_scheme: Literal["central", "one_sided"] = Field(
        "central", description="finite_diff: central difference (2 forwards; error O(ε²) on smooth nets, O(ε) with "
                                "ReLU/max-pool: 0.3-2.6% at fd_eps 0.01, molere.lookahead) or one-sided (1 forward, O(ε))")


def weight_stats(w: torch.Tensor) -> dict[str, float]:
    """Mean, std and effective sample size fraction of a batch of weights."""
    w = w.detach().float()
    ess = (w.sum() ** 2 / (w.pow(2).sum() * len(w))).item() if w.pow(2).sum() > 0 else 0.0
    return {"weight_mean": w.mean().item(), "weight_std": w.std().item() if len(w) > 1 else 0.0,
            "weight_ess": ess}


class MetaSourceHparams(Strict):
    """Which examples form the meta set: the dataset's validation split, or a per-class hold-out of train."""
    meta_source: Literal["val", "train_per_class"] = Field(
        "val", description="meta set = the dataset's val split, or meta_per_class examples per class held out of train")
    meta_per_class: int = Field(10, gt=0, description="examples per class held out (meta_source=train_per_class)")


class ReweightingHparams(MetaHparams, MetaSourceHparams):
    """The meta step's options and where the meta set comes from (`ReweightingTrainer`'s default)."""


def meta_source_split(data: TaskData, hp: MetaSourceHparams, seed: int) -> tuple[ExampleSet, ExampleSet]:
    """(training set, meta set) by `hp.meta_source`: the val split, or a per-class hold-out of train."""
    if hp.meta_source == "val":
        if data.val is None or len(data.val) == 0:
            raise ConfigError(f"method.hparams.meta_source: 'val' needs a validation split, and dataset "
                              f"{data.name!r} has none here; use meta_source=train_per_class")
        return data.train, data.val
    return hold_out(data.train, hp.meta_per_class, None, seed, data.num_classes)


class MetaTrainer(Trainer):
    """A trainer with a meta set: `split()` from `meta_source`, a persistent meta-batch stream (observed or
    true labels) and the look-ahead engine configured by the shared options. Its Hparams must derive from
    `MetaHparams` (and from `MetaSourceHparams` unless `split()` is overridden)."""

    Hparams = ReweightingHparams
    uses_meta_set = True
    lookahead: LookAhead | None = None   # built after setup() unless setup() built its own

    def split(self) -> tuple[ExampleSet, ExampleSet]:
        if not isinstance(self.hp, MetaSourceHparams):
            raise ConfigError(f"method {type(self).__name__}: the default split() reads meta_source; derive its "
                              "Hparams from molere.reweighting.ReweightingHparams or override split()")
        train, meta = meta_source_split(self.data, self.hp, self.context.seed)
        self.info.update(meta_source=self.hp.meta_source, meta_size=len(meta), train_size=len(train))
        return train, meta

    def finish_setup(self) -> None:
        if self.lookahead is None:
            self.lookahead = self.make_lookahead()

    def stream_demand(self) -> dict[str, float]:
        return {**super().stream_demand(), "meta": self.hp.meta_batch_size / self.hp.meta_every}

    def next_meta_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        b = next(self.stream("meta", "meta_set", self.hp.meta_batch_size)).to(self.device)
        return b.x, (b.y_true if self.hp.meta_labels == "true" else b.y)

    def lookahead_lr(self) -> float:
        return self.hp.lookahead_lr or self.lr

    def meta_step_due(self) -> bool:
        """A meta step on this classifier step: there is a meta set, and every `meta_every` steps."""
        return self.meta_set is not None and len(self.meta_set) > 0 and self.global_step % self.hp.meta_every == 0

    def make_lookahead(self, **overrides) -> LookAhead:
        """The look-ahead engine configured by the method's shared options (keyword overrides win)."""
        opts = dict(scope=self.hp.lookahead_scope, val_bn=self.hp.val_bn, mode=self.hp.hypergrad, fd_eps=self.hp.fd_eps,
                    fd_scheme=self.hp.fd_scheme, label_smoothing=self.cfg.label_smoothing)
        return LookAhead(self.model, **{**opts, **overrides})


class ReweightingTrainer(MetaTrainer):
    """Weighted-loss classifier whose weighting function g_φ learns through the look-ahead; the meta set
    comes from `meta_source` unless `split()` says otherwise."""

    # ---- what a subclass provides ------------------------------------------------------------
    def example_weights(self, batch: Batch, losses: torch.Tensor) -> torch.Tensor:
        """w_i = g_φ(...) for the batch (graph to `meta_parameters()`); `losses` are detached."""
        raise NotImplementedError

    def meta_parameters(self) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def meta_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    # ---- shared ------------------------------------------------------------------------------
    ranking_margins: tuple[np.ndarray, np.ndarray] | None = None   # (ids, ERM margins) of its own ranking, if any

    def raw_weights(self, batch: Batch, losses: torch.Tensor) -> torch.Tensor:
        """g_φ before any per-batch rescaling (for the diagnostics); default: `example_weights`."""
        return self.example_weights(batch, losses)

    def finish_setup(self) -> None:
        super().finish_setup()
        self.meta_opt = self.meta_optimizer()   # φ exists now: setup() built it
        self.meta_init = [p.detach().clone() for p in self.meta_parameters()]

    def reference_margins(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, ERM margins) to correlate the weights with: the method's own ranking margins if it has
        them (train-twice), else the stored ERM run of the key (never trained for this)."""
        if self.ranking_margins is not None:
            return self.ranking_margins
        ref = self.context.reference
        return ref.erm_pool_margins() if ref is not None else None

    def pass_statistics(self, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each example's loss (observed label) and raw weight g_φ, for `reweighting_diagnostics`."""
        losses = F.cross_entropy(logits, batch.y, reduction="none")
        return {"loss": losses, "weight": self.raw_weights(batch, losses)}

    @torch.no_grad()
    def reweighting_diagnostics(self, train_out: Outputs | None = None) -> dict[str, float]:
        """`molere.diagnostics` on the training split with the final θ and φ, from `train_out` (an
        `outputs(self.train_set, statistics=True)` pass already made) or a pass of its own."""
        if train_out is None:
            train_out = self.outputs(self.train_set, true_labels=False, statistics=True)
        ex = self.train_set
        ref = self.reference_margins()
        erm = aligned(ex.ids.numpy(), *ref) if ref is not None else None
        st = train_out.statistics
        out = weight_diagnostics(st["weight"], st["loss"],
                                 (ex.labels != ex.true_labels).numpy(), erm)
        out["meta_displacement"] = relative_displacement(self.meta_parameters(), self.meta_init)
        out["untrained"] = bool(out["meta_displacement"] < UNTRAINED_DISPLACEMENT)
        out["examples"] = len(ex)
        return out

    def meta_step(self, batch: Batch) -> torch.Tensor:
        """Update φ on the look-ahead's validation loss; returns the batch losses ℓ_i(θ) (with graph)."""
        xv, yv = self.next_meta_batch()
        hg = self.lookahead.hypergradient(batch.x, batch.y, val_x=xv, val_y=yv, lr=self.lookahead_lr(),
                                          weight_fn=lambda l: self.example_weights(batch, l))
        params = self.meta_parameters()
        for p, g in zip(params, hg.backward_to(params)):
            p.grad = g
        self.meta_opt.step()
        self.meta_opt.zero_grad(set_to_none=True)
        hg.commit_buffers()
        self.log_step(meta_val_loss=hg.val_loss.item())
        self._last_meta_weights = hg.weights.detach()
        return hg.train_losses

    def training_step(self, batch: Batch) -> torch.Tensor:
        meta = self.meta_step_due()
        losses = self.meta_step(batch) if meta else self.train_loss(self.model(batch.x), batch.y, "none")
        if meta and not self.hp.weights_after_meta:
            w = self._last_meta_weights
        else:
            with torch.no_grad():
                w = self.example_weights(batch, losses.detach())
        self.log_step(**weight_stats(w))
        return (w.detach() * losses).mean()

    def extra_state(self) -> dict:
        return {"meta_opt": self.meta_opt.state_dict(), "meta_init": self.meta_init,
                "meta_params": [p.detach().clone() for p in self.meta_parameters()]}

    def load_extra_state(self, state: dict) -> None:
        with torch.no_grad():
            for p, v in zip(self.meta_parameters(), state["meta_params"]):
                p.copy_(v)
        self.meta_init = state.get("meta_init", self.meta_init)
        self.meta_opt.load_state_dict(state["meta_opt"])


def hold_out(examples: ExampleSet, per_class: int | None, fraction: float | None, seed: int,
             num_classes: int) -> tuple[ExampleSet, ExampleSet]:
    """Split off a meta set: `per_class` examples of every (observed) class, or a random `fraction`."""
    g = torch.Generator().manual_seed(seed)
    if per_class is not None:
        held = []
        for c in range(num_classes):
            pos = torch.nonzero(examples.labels == c).flatten()
            held.append(pos[torch.randperm(len(pos), generator=g)[:per_class]])
        held_idx = torch.cat(held)
    else:
        n = int(round(fraction * len(examples)))
        held_idx = torch.randperm(len(examples), generator=g)[:n]
    mask = torch.ones(len(examples), dtype=torch.bool)
    mask[held_idx] = False
    return examples.subset(torch.nonzero(mask).flatten()), examples.subset(held_idx.sort().values)


def mean_one(w: torch.Tensor) -> torch.Tensor:
    """A batch's weights rescaled to mean 1 (graph kept); all-zero weights stay zero."""
    total = w.sum()
    return torch.where(total > 0, w * (len(w) / total.clamp_min(torch.finfo(w.dtype).tiny)), w)


def clamped_normalised(dw: torch.Tensor) -> torch.Tensor:
    """L2RW's weights from meta-gradients: max(−∂L_val/∂w, 0), normalised to sum 1 (all zero stays zero)."""
    w = (-dw).clamp_min(0)
    total = w.sum()
    return w / total if total > 0 else torch.zeros_like(w)
