"""Shared machinery of meta-reweighting methods: options, the meta-set stream, the meta step.

`MetaTrainer` (L2RW, FSR): a meta set, its stream and the look-ahead; `training_step` is the method's own
and calls `meta_lookahead(batch)` when `meta_step_due()` (its options: `MetaHparams`).
`ReweightingTrainer`: the classifier trains on Σ w_i ℓ_i / B with w = g_φ(batch, outputs) a learned
weighting function; every `meta_every` steps φ takes a step on the look-ahead's validation loss. A
subclass builds φ in `setup()` and implements `example_weights`, `meta_parameters`, `meta_optimizer`
(abstract: a class missing one fails at registration); its step's own options: `ReweightingStepHparams`.
The meta set is `meta_source`'s unless `split()` says otherwise.
"""
from __future__ import annotations

import abc
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import Field

from .config import ConfigError, Strict
from .data import Batch, ExampleSet, TaskData, require_val
from .diagnostics import aligned, relative_displacement, weight_diagnostics
from .evaluation import Outputs
from .forward import BatchOutputs
from .lookahead import DetachedWeightsError, Hypergradient, LookAhead
from .splits import Draw, at_most, by_class, held_positions, rest_of, share
from .trainer import Trainer


class MetaHparams(Strict):
    """Look-ahead options every meta method shares (each one a choice the papers make differently)."""
    meta_every: int = Field(1, ge=1, description="meta update every Q classifier steps")
    meta_batch_size: int = Field(128, gt=0, description="validation/meta batch size of a meta step")
    lookahead_scope: Literal["all", "head"] = Field("all", description="look ahead on all parameters or the head only (FSR)")
    lookahead_lr: float | None = Field(None, gt=0, description="virtual step size α; None = classifier's current lr")
    meta_labels: Literal["observed", "true"] = Field("observed", description="labels of the meta set: observed (realistic) or true (oracle)")
    val_bn: Literal["batch", "running"] = Field("batch", description="BatchNorm statistics of the look-ahead's validation forward")
    hypergrad: Literal["reverse", "forward", "finite_diff"] = Field(
        "reverse", description="meta-gradient: exact by second-order reverse mode or first-order + jvp (less memory), "
                               "or approximate by a central difference along ∇L_val (DARTS; fastest)")
    fd_eps: float = Field(0.01, gt=0, description="finite_diff step: ε = fd_eps / ‖∇L_val‖ (DARTS' 0.01)")
    fd_scheme: Literal["central", "one_sided"] = Field(
        "central", description="finite_diff: central difference (2 forwards; error O(ε²) on smooth nets, O(ε) with "
                                "ReLU/max-pool: 0.3-2.6% at fd_eps 0.01, molere.lookahead) or one-sided (1 forward, O(ε))")


class ReweightingStepHparams(Strict):
    """Options of the reweighting step of a `ReweightingTrainer` (no other trainer reads them)."""
    weights_after_meta: bool = Field(True, description="real step uses the weights after the meta update (L2RW/MWN order)")


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


class MetaTrainerHparams(MetaHparams, MetaSourceHparams):
    """The look-ahead's options and where the meta set comes from (`MetaTrainer`'s default)."""


class ReweightingHparams(MetaHparams, ReweightingStepHparams, MetaSourceHparams):
    """Look-ahead and reweighting-step options and the meta set's source (`ReweightingTrainer`'s default)."""


def meta_source_split(data: TaskData, hp: MetaSourceHparams, seed: int) -> tuple[ExampleSet, ExampleSet]:
    """(training set, meta set) by `hp.meta_source`: the val split, or a per-class hold-out of train."""
    if hp.meta_source == "val":
        return data.train, require_val(data, "method.hparams.meta_source='val'", "use meta_source=train_per_class")
    return hold_out(data.train, hp.meta_per_class, None, seed, data.num_classes)


class MetaTrainer(Trainer):
    """A trainer with a meta set: `split()` from `meta_source`, a persistent meta-batch stream (observed or
    true labels) and the look-ahead engine configured by the shared options. Its Hparams must derive from
    `MetaHparams` (and from `MetaSourceHparams` unless `split()` is overridden)."""

    Hparams = MetaTrainerHparams
    uses_meta_set = True
    lookahead: LookAhead | None = None   # built after setup() unless setup() built its own

    @classmethod
    def check_class(cls, name: str) -> None:
        super().check_class(name)
        hp, fields = cls.Hparams, cls.Hparams.model_fields
        if not issubclass(hp, MetaHparams):
            raise TypeError(f"method {name!r}: Hparams must derive from molere.reweighting.MetaHparams")
        if cls.split is MetaTrainer.split and not issubclass(hp, MetaSourceHparams):
            raise TypeError(f"method {name!r}: the default split() reads meta_source; derive Hparams from "
                            "MetaSourceHparams too or override split()")
        if "weights_after_meta" in fields and not issubclass(cls, ReweightingTrainer):
            raise TypeError(f"method {name!r}: weights_after_meta is read by ReweightingTrainer only; "
                            "a MetaTrainer would ignore it (derive Hparams from MetaHparams, not ReweightingHparams)")

    @abc.abstractmethod
    def training_step(self, batch: Batch) -> torch.Tensor:
        """The loss of the real step; `meta_lookahead(batch)` when `meta_step_due()`."""

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

    def meta_lookahead(self, batch: Batch, weights: Callable[[BatchOutputs], torch.Tensor] | None = None,
                       ) -> Hypergradient:
        """One look-ahead of `batch` against the next meta batch, with weights `weights(outputs)` (None: at
        zero weights, L2RW's ε = 0). Its training forward is the real step's: `hg.outputs` (logits, losses
        with graph), its BatchNorm statistics committed. Logs train/meta_val_loss."""
        xv, yv = self.next_meta_batch()
        hg = self.lookahead.hypergradient(batch.x, batch.y, val_x=xv, val_y=yv, lr=self.lookahead_lr(),
                                          weight_fn=weights)
        hg.commit_buffers()
        self.log_step(meta_val_loss=hg.val_loss.item())
        return hg

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

    Hparams = ReweightingHparams

    # ---- what a subclass provides ------------------------------------------------------------
    @abc.abstractmethod
    def example_weights(self, batch: Batch, out: BatchOutputs) -> torch.Tensor:
        """w_i = g_φ(...) for the batch, with graph to `meta_parameters()`; `out` (logits, per-example
        losses, features or None) is detached."""

    @abc.abstractmethod
    def meta_parameters(self) -> list[torch.nn.Parameter]:
        """φ: the parameters `meta_optimizer()` steps."""

    @abc.abstractmethod
    def meta_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of `meta_parameters()` (built once, after `setup()`)."""

    # ---- shared ------------------------------------------------------------------------------
    ranking_margins: tuple[np.ndarray, np.ndarray] | None = None   # (ids, ERM margins) of its own ranking, if any

    @classmethod
    def check_class(cls, name: str) -> None:
        super().check_class(name)
        if not issubclass(cls.Hparams, ReweightingStepHparams):
            raise TypeError(f"method {name!r}: Hparams must derive from molere.reweighting.ReweightingHparams "
                            "(or ReweightingStepHparams): its step reads weights_after_meta")

    def training_step(self, batch: Batch) -> torch.Tensor:
        meta = self.meta_step_due()
        out = self.meta_step(batch) if meta else self.forward_outputs(batch)
        if meta and not self.hp.weights_after_meta:
            w = self._last_meta_weights
        else:
            with torch.no_grad():
                w = self.example_weights(batch, out.detached())
        self.log_step(**weight_stats(w))
        return (w.detach() * out.losses).mean()

    def raw_weights(self, batch: Batch, out: BatchOutputs) -> torch.Tensor:
        """g_φ before any per-batch rescaling (for the diagnostics); default: `example_weights`."""
        return self.example_weights(batch, out)

    def finish_setup(self) -> None:
        super().finish_setup()
        self.meta_opt = self.meta_optimizer()   # φ exists now: setup() built it
        self.meta_init = [p.detach().clone() for p in self.meta_parameters()]

    def reference_margins(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, ERM margins) to correlate the weights with: the method's own ranking margins if it has
        them (train-twice), else the stored ERM run of the key (never trained for this)."""
        if self.ranking_margins is not None:
            return self.ranking_margins
        found = self.reference.pool_margins(train=False)
        return None if found is None else (found.ids, found.margins)

    weights_see_labels: bool = True   # g_φ can depend on the observed label (MWN's φ(loss)); False: φ(x) (LRW)

    def pass_statistics(self, batch: Batch, out: BatchOutputs) -> dict[str, torch.Tensor]:
        """Each example's loss (observed label) and raw weight under the final g_φ and the initial one, for
        `reweighting_diagnostics`."""
        final = self.raw_weights(batch, out)
        params = self.meta_parameters()
        saved = [p.data for p in params]
        try:
            for p, q in zip(params, self.meta_init):
                p.data = q.to(device=p.device, dtype=p.dtype)
            initial = self.raw_weights(batch, out)
        finally:
            for p, d in zip(params, saved):
                p.data = d
        return {"loss": out.losses, "weight": final, "weight_init": initial}

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
        out = weight_diagnostics(st["weight"], st["loss"], (ex.labels != ex.true_labels).numpy(), erm,
                                 initial=st.get("weight_init"), label_dependent=self.weights_see_labels)
        out["meta_displacement"] = relative_displacement(self.meta_parameters(), self.meta_init)
        out["examples"] = len(ex)
        return out

    def meta_step(self, batch: Batch) -> BatchOutputs:
        """Update φ on the look-ahead's validation loss; returns the training forward's outputs (with graph)."""
        hg = self.meta_lookahead(batch, lambda out: self.example_weights(batch, out))
        params = self.meta_parameters()
        try:
            grads = hg.backward_to(params)
        except DetachedWeightsError as exc:
            raise DetachedWeightsError(
                f"method {self.registered_name or type(self).__name__!r}: example_weights() must return weights "
                f"built from meta_parameters() with their graph ({exc})") from None
        for p, g in zip(params, grads):
            p.grad = g
        self.meta_opt.step()
        self.meta_opt.zero_grad(set_to_none=True)
        self._last_meta_weights = hg.weights.detach()
        return hg.outputs

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
    draw = Draw(seed, "torch")
    if per_class is not None:
        held = held_positions(by_class(examples.labels.numpy(), range(num_classes)), draw, at_most(per_class))
    else:
        held = held_positions([np.arange(len(examples))], draw, share(fraction))
    return examples.subset(rest_of(len(examples), held)), examples.subset(held)


def mean_one(w: torch.Tensor) -> torch.Tensor:
    """A batch's weights rescaled to mean 1 (graph kept); all-zero weights stay zero."""
    total = w.sum()
    return torch.where(total > 0, w * (len(w) / total.clamp_min(torch.finfo(w.dtype).tiny)), w)


def clamped_normalised(dw: torch.Tensor) -> torch.Tensor:
    """L2RW's weights from meta-gradients: max(−∂L_val/∂w, 0), normalised to sum 1 (all zero stays zero)."""
    w = (-dw).clamp_min(0)
    total = w.sum()
    return w / total if total > 0 else torch.zeros_like(w)
