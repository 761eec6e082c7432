"""The one Trainer interface: the base class owns the loop, a method overrides only what differs.

Hooks a method may override (all optional):
  split() -> (train, meta)      choose the training set and the meta/validation set (default: train, None)
  setup()                       build extra networks / optimisers (after split(); sets exist)
  finish_setup()                a base class's own setup after setup() (ReweightingTrainer: φ's optimiser)
  on_epoch_start(epoch)         e.g. re-split (MOLERE) or refresh a probe set (FSR)
  training_step(batch) -> loss  the loss whose gradient the real classifier step follows
  on_epoch_end(epoch) -> dict   extra per-epoch metrics
  extra_state() / load_extra_state(state)   what a checkpoint must hold beyond model and optimisers
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, NoHparams, Strict, TrainConfig
from .data import Batch, ExampleSet, TaskData
from .margins import probabilistic_margin


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite."""


class Callback(Protocol):
    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass
class RunContext:
    """What the harness lends a method: how to build models, the device, the seed, reference runs."""
    seed: int = 0
    device: str = "cpu"
    model_factory: Callable[..., nn.Module] | None = None   # () -> a fresh classifier of the run's architecture
    reference: Any = None            # ERM-first-pass provider (see baselines.train_twice); None = train in-process
    callbacks: list = field(default_factory=list)
    run_config: dict = field(default_factory=dict)   # the resolved trial config, for reference-run keys


@dataclass
class Outputs:
    """Per-example evaluation outputs of one split."""
    ids: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    margins: np.ndarray
    groups: np.ndarray | None = None


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_every, gamma=cfg.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


class Trainer:
    """Trains a classifier with plain cross-entropy; subclasses change what differs."""

    Hparams: type[Strict] = NoHparams
    registered_name: str = ""     # set by the registry
    uses_meta_set: bool = False   # True when `split()` returns a validation/meta set (checked at construction)
    needs_reference: bool = False  # True when it reuses the ERM run of its key (RunContext.reference)
    trains_on_val: bool = False   # True when the official val split is pooled into training: no val/* metrics
    saves_pool_margins: bool = False   # True when its train + val margins are stored (they rank the pool for others)

    def __init__(self, model: nn.Module, data: TaskData, train: TrainConfig, hparams: Strict | None = None,
                 context: RunContext | None = None):
        self.context = context or RunContext()
        self.device = torch.device(self.context.device)
        self.model = model.to(self.device)
        self.data, self.cfg = data, train
        self.hp = hparams if hparams is not None else self.Hparams()
        self.generator = torch.Generator().manual_seed(self.context.seed)
        self.optimizer = make_optimizer(self.model.parameters(), train)
        self.schedule = make_schedule(self.optimizer, train)
        self.epoch, self.global_step = 0, 0
        self.info: dict[str, Any] = {}   # method facts reported with the result (split sizes, ...)
        self.last_evaluation: tuple[int, dict, dict] | None = None   # (epoch, metrics, outputs)
        self._step_logs: dict[str, list[float]] = defaultdict(list)
        self.train_set, self.meta_set = self.split()
        if self.uses_meta_set and (self.meta_set is None or len(self.meta_set) == 0):
            raise ConfigError(f"method {self.registered_name or type(self).__name__!r} uses a meta "
                              "set but its split() returned none; return (train, meta) or set uses_meta_set = False")
        self.setup()
        self.finish_setup()

    # ---- hooks -------------------------------------------------------------------------------
    def setup(self) -> None:
        pass

    def finish_setup(self) -> None:
        """The base classes' own setup, after the method's `setup()` (e.g. the meta optimiser of φ)."""

    def split(self) -> tuple[ExampleSet, ExampleSet | None]:
        return self.data.train, None

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def training_step(self, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.model(batch.x), batch.y)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # ---- helpers for methods -----------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The classifier's current learning rate (the default look-ahead step size)."""
        return self.optimizer.param_groups[0]["lr"]

    def log_step(self, **values: float) -> None:
        """Record per-step statistics; their epoch means join the epoch metrics as train/<name>."""
        for k, v in values.items():
            self._step_logs[k].append(float(v))

    # ---- the loop ----------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> float:
        """One real classifier step on `batch` (the method's loss, backward, clip, optimiser step)."""
        loss = self.training_step(batch.to(self.device))
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss {loss.item()} at epoch {self.epoch + 1}, "
                                     f"step {self.global_step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.global_step += 1
        return loss.item()

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training set (hooks included, no evaluation); returns the epoch's metrics."""
        t0 = time.perf_counter()
        self.model.train()
        self.on_epoch_start(self.epoch)
        losses = [self.train_step(batch) for batch in self.train_set.batches(
            self.cfg.batch_size, shuffle=True, generator=self.generator, num_workers=self.cfg.num_workers)]
        self.schedule.step()
        metrics = {"epoch": self.epoch + 1, "train/loss": float(np.mean(losses)) if losses else float("nan"),
                   "train/epoch_time_s": time.perf_counter() - t0, "lr": self.lr}
        metrics.update({f"train/{k}": float(np.mean(v)) for k, v in self._step_logs.items()})
        self._step_logs.clear()
        metrics.update(self.on_epoch_end(self.epoch))
        self.epoch += 1
        return metrics

    def fit(self) -> dict[str, Any]:
        """Train for the configured epochs; returns the final metrics (history via callbacks)."""
        metrics: dict[str, float] = {}
        while self.epoch < self.cfg.epochs:
            metrics = self.train_epoch()
            if self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs:
                self.last_evaluation = (self.epoch, *self.evaluate())
                metrics.update(self.last_evaluation[1])
            for cb in self.context.callbacks:
                cb.on_epoch_end(self, self.epoch, metrics)
        return metrics

    # ---- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, examples: ExampleSet, batch_size: int = 512) -> torch.Tensor:
        """Evaluation-mode logits for every example of `examples`, in order."""
        was_training = self.model.training
        self.model.eval()
        out = [self.model(b.x.to(self.device)).float().cpu()
               for b in examples.batches(batch_size, train=False, num_workers=self.cfg.num_workers)]
        self.model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.data.num_classes)

    def outputs(self, examples: ExampleSet, true_labels: bool = True) -> Outputs:
        """Predictions and probabilistic margins (against true labels unless told otherwise)."""
        z = self.logits(examples)
        y = examples.true_labels if true_labels else examples.labels
        return Outputs(ids=examples.ids.numpy(), labels=y.numpy(), preds=z.argmax(1).numpy(),
                       margins=probabilistic_margin(z, y).numpy(),
                       groups=None if examples.groups is None else examples.groups.numpy())

    def evaluate(self, splits: dict[str, ExampleSet] | None = None) -> tuple[dict[str, float], dict[str, Outputs]]:
        """Accuracy (and worst-group accuracy, official metrics) on every evaluation split."""
        metrics, outs = {}, {}
        if splits is None:
            splits = self.data.eval_splits()
            if self.trains_on_val:   # its val/* would not be held-out numbers
                splits.pop("val", None)
        for name, ex in splits.items():
            if len(ex) == 0:
                continue
            o = outs[name] = self.outputs(ex)
            correct = o.preds == o.labels
            metrics[f"{name}/acc"] = float(correct.mean())
            metrics[f"{name}/margin_mean"] = float(o.margins.mean())
            if o.groups is not None:
                accs = [correct[o.groups == g].mean() for g in np.unique(o.groups)]
                metrics[f"{name}/worst_group_acc"] = float(min(accs))
            if self.data.evaluator is not None:
                for k, v in self.data.evaluator(name, torch.as_tensor(o.preds), ex).items():
                    metrics[f"{name}/{k}"] = float(v)
        return metrics, outs

    # ---- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "epoch": self.epoch, "global_step": self.global_step,
                "generator": self.generator.get_state(), "extra": self.extra_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.generator.set_state(state["generator"])
        self.load_extra_state(state["extra"])
