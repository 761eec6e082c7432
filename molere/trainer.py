"""The one Trainer interface: the base class owns the loop, a method overrides only what differs.
The hooks a method may override and what a step checkpoint holds: docs/design/trainer.md.
"""
from __future__ import annotations

import abc
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .budget import data_counts, steps_per_epoch
from .config import ConfigError, NoHparams, Strict, TrainConfig
from .data import Batch, ExampleSet, Loading, Stream, TaskData, name_key
from .evaluation import Outputs, due_splits, eval_interval, split_metrics, split_outputs
from .forward import BatchOutputs, head_inputs
from .guard import DivergenceGuard, NonFiniteLossError
from .optim import make_optimizer, make_schedule, per_step  # noqa: F401  (make_optimizer: re-exported)
from .precision import autocast, prepare
from .reference import Reference, ReferenceNeeds, ReferenceService
from .rng import global_rng_state, set_global_rng_state


class Callback:
    """Hooks the harness attaches to a trainer (`RunContext.callbacks`); both are no-ops here."""

    def on_step_end(self, trainer: "Trainer", step: int, metrics: dict[str, float]) -> None:
        """After every real optimizer step; `step` = trainer.global_step after the increment, `metrics`
        holds at least train/step_loss and lr (plus train/batch_size and this step's `log_step` values as
        train/step_<name>)."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None:
        """After every epoch (and its evaluation when due); `epoch` = completed epochs."""


@dataclass
class RunContext:
    """What the harness lends a method: how to build models, the device, the seed, reference runs."""
    seed: int = 0
    device: str = "cpu"
    model_factory: Callable[..., nn.Module] | None = None   # () -> a fresh classifier of the run's architecture
    reference: Reference | None = None   # the stored ERM reference of the key; None = trained in-process if asked
    callbacks: list = field(default_factory=list)
    run_config: dict = field(default_factory=dict)   # the resolved trial config, for reference-run keys
    cpus: float | None = None        # CPUs the trial was given (default DataLoader workers); None = all visible


class Trainer(abc.ABC):
    """Trains a classifier with plain cross-entropy; subclasses change what differs."""

    Hparams: type[Strict] = NoHparams
    registered_name: str = ""     # set by the registry
    uses_meta_set: bool = False   # True when `split()` returns a validation/meta set (checked at construction)
    trains_on_val: bool = False   # True when the official val split is pooled into training: no val/* metrics

    def __init__(self, model: nn.Module, data: TaskData, train: TrainConfig, hparams: Strict | None = None,
                 context: RunContext | None = None):
        self.context = context or RunContext()
        self.device = torch.device(self.context.device)
        self.model = prepare(model.to(self.device), self.device, train.precision, train.tf32, train.channels_last)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=train.precision == "fp16")
        self.data, self.cfg = data, train
        self.hp = hparams if hparams is not None else self.Hparams()
        self.generator = torch.Generator().manual_seed(self.context.seed)
        self.loading = Loading.for_run(train.num_workers, self.context.device, self.context.cpus)
        self._streams: dict[str, tuple[str, Stream]] = {}
        self._pending_streams: dict[str, tuple[ExampleSet, dict]] = {}
        self._workers: dict[str, int] | None = None   # loader workers per stream key (`stream_demand`)
        self._progress: dict | None = None   # losses of the unfinished epoch (None between epochs)
        self.last_metrics: dict[str, float] = {}
        self.optimizer = make_optimizer(self.model, train)
        self.epoch, self.global_step = 0, 0
        self.info: dict[str, Any] = {}   # method facts reported with the result (split sizes, ...)
        self.last_evaluation: tuple[int, dict, dict] | None = None   # (epoch, metrics, outputs)
        self._step_logs: dict[str, list[float]] = defaultdict(list)
        self.guard = DivergenceGuard(train.guard, data.train, data.num_classes, self.context.seed)
        self.train_set, self.meta_set = self.split()
        if self.uses_meta_set and (self.meta_set is None or len(self.meta_set) == 0):
            raise ConfigError(f"method {self.registered_name or type(self).__name__!r} uses a meta "
                              "set but its split() returned none; return (train, meta) or set uses_meta_set = False")
        self.steps_per_epoch = steps_per_epoch(data, self.train_set, train.batch_size, train.budget)
        self.info["counts"] = {**data_counts(data, self.train_set, self.meta_set), "budget": train.budget,
                               "steps_per_epoch": self.steps_per_epoch}
        self.schedule = make_schedule(self.optimizer, train, self.steps_per_epoch)
        self.setup()
        self.finish_setup()

    # ---- class-level declarations ------------------------------------------------------------
    @classmethod
    def reference_needs(cls, hp: Strict) -> ReferenceNeeds:
        """What this method needs from the reference run of its key with hyperparameters `hp` (default: nothing)."""
        return ReferenceNeeds()

    @classmethod
    def check_class(cls, name: str) -> None:
        """Checks at registration (TypeError naming the method): every required (abstract) hook is there."""
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            owners = {k.__name__ for m in missing for k in cls.__mro__
                      if getattr(k.__dict__.get(m), "__isabstractmethod__", False)}
            raise TypeError(f"method {name!r} ({cls.__name__}) does not implement {', '.join(missing)}, "
                            f"required by {', '.join(sorted(owners))}")

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
        return self.train_loss(self.model(batch.x), batch.y)

    def forward_outputs(self, batch: Batch) -> BatchOutputs:
        """One training forward of `batch`: logits and per-example losses (graph to θ), features (detached)."""
        with head_inputs(self.model) as feats:
            logits = self.model(batch.x)
        return BatchOutputs(logits, self.train_loss(logits, batch.y, "none"), feats[0] if feats else None)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {}

    def stream_demand(self) -> dict[str, float]:
        """Images per training step each persistent stream (by key) decodes; they share the loader workers
        in proportion (`Loading.share`). An undeclared stream gets one worker."""
        return {"train": float(self.cfg.batch_size)}

    def pass_statistics(self, batch: Batch, out: BatchOutputs) -> dict[str, torch.Tensor]:
        """Per-example statistics of `batch` (on the device) a method records during an evaluation pass
        (`outputs(..., statistics=True)`; `out`: its eval logits, losses, features), so that no second pass
        is needed; default: none."""
        return {}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # ---- helpers for methods -----------------------------------------------------------------
    @property
    def reference(self) -> ReferenceService:
        """The ERM reference of this run's key: stored results, else trained in-process (as declared)."""
        if getattr(self, "_reference", None) is None:
            self._reference = ReferenceService(self)
        return self._reference

    @property
    def lr(self) -> float:
        """The classifier's current learning rate (the default look-ahead step size)."""
        return self.optimizer.param_groups[0]["lr"]

    def autocast(self):
        """The configured autocast (`train.precision`) for forwards on the trainer's device."""
        return autocast(self.device, self.cfg.precision)

    def train_loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The classifier's training loss: cross-entropy with the configured label smoothing."""
        return F.cross_entropy(logits, y, reduction=reduction, label_smoothing=self.cfg.label_smoothing)

    def stream(self, key: str, attr: str, batch_size: int, workers: int | None = None) -> Stream:
        """The persistent stream `key` over the set held in attribute `attr` (a new one when that set changed)."""
        examples = getattr(self, attr)
        entry = self._streams.get(key)
        if entry is None or entry[1].examples is not examples:
            if workers is None:
                self._workers = self._workers or self.loading.share(self.stream_demand())
                workers = self._workers.get(key, min(1, self.loading.num_workers))
            s = Stream(examples, batch_size, self.generator, seed=self.context.seed * 2**32 + name_key(key),
                       loading=self.loading, workers=workers)
            pending = self._pending_streams.pop(key, None)
            if pending is not None and pending[0] is examples:   # the set it was saved with, restored
                s.load_state_dict(pending[1])
            entry = self._streams[key] = (attr, s)
        return entry[1]

    def log_step(self, **values: float) -> None:
        """Record per-step statistics; their epoch means join the epoch metrics as train/<name>."""
        for k, v in values.items():
            self._step_logs[k].append(float(v))

    # ---- the loop ----------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> float:
        """One real classifier step on `batch` (the method's loss, backward, clip, optimiser step)."""
        with self.autocast():
            loss = self.training_step(batch.to(self.device))
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss {loss.item()} at epoch {self.epoch + 1}, "
                                     f"step {self.global_step}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()   # the scaler (fp16 only) is a no-op otherwise
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.global_step += 1
        if per_step(self.schedule):
            self.schedule.step_update(self.global_step)
        return loss.item()

    def train_epoch(self) -> dict[str, float]:
        """One epoch, `steps_per_epoch` steps from the persistent training stream (hooks included, no evaluation:
        `molere.budget`); returns the epoch's metrics. A trainer restored mid-epoch continues the same epoch
        (its epoch-start hook already ran)."""
        self._epoch_t0 = time.perf_counter()
        self.model.train()
        fresh = self._progress is None
        if fresh:
            with self.autocast():
                self.on_epoch_start(self.epoch)
            self._progress = {"losses": [], "elapsed": 0.0}
        stream = self.stream("train", "train_set", self.cfg.batch_size)
        losses = self._progress["losses"]
        step_cbs = [cb for cb in self.context.callbacks if hasattr(cb, "on_step_end")]
        for _ in range(self.steps_per_epoch - len(losses)):   # the rest of this epoch (all of it when fresh)
            logged = {k: len(v) for k, v in self._step_logs.items()}
            batch = next(stream)
            losses.append(self.train_step(batch))
            if step_cbs:   # after the loss is recorded: a step checkpoint holds this step's progress
                step = {"train/step_loss": losses[-1], "lr": self.lr, "train/batch_size": float(len(batch.y))}
                step.update({f"train/step_{k}": v[-1] for k, v in self._step_logs.items() if len(v) > logged.get(k, 0)})
                for cb in step_cbs:
                    cb.on_step_end(self, self.global_step, step)
        self.schedule.step(self.epoch + 1) if per_step(self.schedule) else self.schedule.step()
        elapsed = self._progress["elapsed"] + time.perf_counter() - self._epoch_t0
        metrics = {"epoch": self.epoch + 1, "train/loss": float(np.mean(losses)) if losses else float("nan"),
                   "train/epoch_time_s": elapsed, "lr": self.lr}
        metrics.update({f"train/{k}": float(np.mean(v)) for k, v in self._step_logs.items()})
        self._step_logs.clear()
        with self.autocast():
            metrics.update(self.on_epoch_end(self.epoch))
        self._progress = None
        self.epoch += 1
        return metrics

    def fit(self, evaluate: bool = True) -> dict[str, Any]:
        """Train for the configured epochs, or until the guard stops a diverged trial (`self.guard.divergence`),
        evaluating as configured (`evaluate=False`: never); returns the final metrics (history via callbacks)."""
        metrics: dict[str, float] = dict(self.last_metrics)
        splits, cfg = self.eval_splits(), self.cfg
        every = eval_interval(cfg.eval_every, len(self.train_set), sum(map(len, splits.values())), cfg.epochs)
        while self.epoch < cfg.epochs and not self.guard.stopped:
            with self.guard.catching_nonfinite(self.epoch + 1):
                metrics = self.train_epoch()
            if self.guard.stopped:   # a non-finite loss ended the epoch early
                break
            metrics.update(self.guard.after_epoch(self, self.epoch, metrics["train/loss"]))
            if evaluate and (self.epoch % every == 0 or self.epoch == cfg.epochs or self.guard.stopped):
                due = due_splits(splits, cfg.eval_selection, final=self.epoch == cfg.epochs or self.guard.stopped)
                self.last_evaluation = (self.epoch, *self.evaluate(due))
                metrics.update(self.last_evaluation[1])
            self.last_metrics = metrics
            for cb in self.context.callbacks:
                cb.on_epoch_end(self, self.epoch, metrics)
        self.info["counts"]["steps"] = self.global_step
        return metrics

    # ---- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def eval_logits(self, batch: Batch) -> torch.Tensor:
        """The classifier's float32 logits of one batch, on the device (called with the model in eval mode)."""
        with self.autocast():
            return self.model(batch.to(self.device).x).float()

    @torch.no_grad()
    def logits(self, examples: ExampleSet, batch_size: int = 512) -> torch.Tensor:
        """Evaluation-mode logits for every example of `examples`, in order."""
        was_training = self.model.training
        self.model.eval()
        out = [self.eval_logits(b).cpu() for b in examples.batches(batch_size, train=False, loading=self.loading)]
        self.model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.data.num_classes)

    def outputs(self, examples: ExampleSet, true_labels: bool = True, batch_size: int = 512,
                classes=None, statistics: bool = False) -> Outputs:
        """Per-example predictions and margins of `examples` (`molere.evaluation.split_outputs`)."""
        return split_outputs(self, examples, true_labels, batch_size, classes, statistics)

    def eval_splits(self) -> dict[str, ExampleSet]:
        """The task's evaluation splits, without val where it is training data (no held-out val/* then)."""
        return {k: v for k, v in self.data.eval_splits().items() if not (self.trains_on_val and k == "val")}

    def evaluate(self, splits: dict[str, ExampleSet] | None = None) -> tuple[dict[str, float], dict[str, Outputs]]:
        """Accuracy (and worst-group accuracy, official metrics) on every evaluation split."""
        metrics, outs = {}, {}
        for name, ex in (self.eval_splits() if splits is None else splits).items():
            if len(ex) == 0:
                continue
            observed = name == "selection"   # model selection sees the labels a user has (maybe noisy)
            o = outs[name] = self.outputs(ex, true_labels=not observed, classes=self.data.class_subsets.get(name))
            metrics.update(split_metrics(name, o, ex, self.data.evaluator, observed))
        return metrics, outs

    # ---- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit (plain types and tensors only)."""
        progress = None
        if self._progress is not None:
            now = time.perf_counter()
            progress = {"losses": list(self._progress["losses"]),
                        "step_logs": {k: list(v) for k, v in self._step_logs.items()},
                        "elapsed": self._progress["elapsed"] + now - getattr(self, "_epoch_t0", now)}
        streams = {k: {"attr": attr, **s.state_dict()} for k, (attr, s) in self._streams.items()
                   if s.examples is getattr(self, attr, None)}   # a stale stream is rebuilt on its next use
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "epoch": self.epoch, "global_step": self.global_step,
                "generator": self.generator.get_state(), "extra": self.extra_state(), "rng": global_rng_state(),
                "streams": streams, "progress": progress, "last_metrics": dict(self.last_metrics),
                "info": dict(self.info), "scaler": self.scaler.state_dict(), "guard": self.guard.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.generator.set_state(state["generator"])
        self.load_extra_state(state["extra"])
        if state.get("scaler"):   # empty when saved without fp16
            self.scaler.load_state_dict(state["scaler"])
        if "rng" in state:
            set_global_rng_state(state["rng"])
        self._streams = {}
        self._pending_streams = {k: (getattr(self, v["attr"], None), v) for k, v in state.get("streams", {}).items()}
        progress = state.get("progress")
        self._progress = None if progress is None else {"losses": list(progress["losses"]), "elapsed": progress["elapsed"]}
        self._step_logs = defaultdict(list, {k: list(v) for k, v in (progress or {}).get("step_logs", {}).items()})
        self.last_metrics = dict(state.get("last_metrics", {}))
        self.info.update(state.get("info", {}))
        self.guard.load_state_dict(state.get("guard"))
