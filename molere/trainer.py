"""The one Trainer interface: the base class owns the loop, a method overrides only what differs.

Hooks a method may override (all optional):
  split() -> (train, meta)      choose the training set and the meta/validation set (default: train, None)
  setup()                       build extra networks / optimisers (after split(); sets exist)
  finish_setup()                a base class's own setup after setup() (ReweightingTrainer: φ's optimiser)
  on_epoch_start(epoch)         e.g. re-split (MOLERE) or refresh a probe set (FSR)
  training_step(batch) -> loss  the loss whose gradient the real classifier step follows
  on_epoch_end(epoch) -> dict   extra per-epoch metrics
  extra_state() / load_extra_state(state)   what a checkpoint must hold beyond model and optimisers

Persistent batch streams (`stream(key, attr, batch_size)`, `molere.data.Stream`) are part of the
trainer's state: `state_dict()` holds every random state (the trainer's generator, torch's CPU/CUDA,
python's and numpy's global RNG), every live stream's position (the epoch's data order included) and the
progress of an unfinished epoch, so a trainer restored from a step checkpoint continues bit for bit.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, NoHparams, Strict, TrainConfig
from .data import Batch, ExampleSet, Loading, Stream, TaskData, name_key
from .guard import DivergenceGuard, NonFiniteLossError
from .margins import probabilistic_margin
from .precision import autocast, prepare
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
    reference: Any = None            # ERM-first-pass provider (see baselines.train_twice); None = train in-process
    callbacks: list = field(default_factory=list)
    run_config: dict = field(default_factory=dict)   # the resolved trial config, for reference-run keys
    cpus: float | None = None        # CPUs the trial was given (default DataLoader workers); None = all visible


@dataclass
class Outputs:
    """Per-example evaluation outputs of one split."""
    ids: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    margins: np.ndarray
    groups: np.ndarray | None = None
    observed_margins: np.ndarray | None = None   # against the observed labels (= margins when asked for those)
    statistics: dict[str, np.ndarray] = field(default_factory=dict)   # the method's `pass_statistics`, if asked


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The classifier's optimiser; `params` is the model (or its parameters).

    With `decay_norm_bias: false` (a model needed) timm's factory builds two groups: no weight decay on
    1-d tensors (norms, biases) and on the model's `no_weight_decay()` names (position embeddings, tokens)."""
    if not cfg.decay_norm_bias:
        if not isinstance(params, nn.Module):
            raise TypeError("decay_norm_bias=False needs the model, not its parameters")
        from timm.optim import create_optimizer_v2
        return create_optimizer_v2(params, opt="momentum" if cfg.optimizer == "sgd" else "adamw", lr=cfg.lr,
                                   weight_decay=cfg.weight_decay, momentum=cfg.momentum, filter_bias_and_bn=True,
                                   foreach=False)
    if isinstance(params, nn.Module):
        params = params.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, updates_per_epoch: int = 0):
    """The learning-rate schedule; `warmup_cosine` is timm's cosine scheduler stepped per update
    (`per_step(schedule)`), the others are torch schedulers stepped per epoch."""
    if cfg.schedule == "warmup_cosine":
        from timm.scheduler import create_scheduler_v2
        sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                                       warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=False,
                                       updates_per_epoch=max(1, updates_per_epoch))
        return sched
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_every, gamma=cfg.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def per_step(schedule) -> bool:
    """Whether `schedule` is stepped after every optimiser update (timm's per-update schedulers)."""
    return hasattr(schedule, "step_update")


def mask_to(logits: torch.Tensor, classes) -> torch.Tensor:
    """`logits` with every class outside `classes` set to -inf (argmax and softmax over the subset)."""
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[torch.as_tensor(list(classes), dtype=torch.long, device=logits.device)] = True
    return logits.masked_fill(~keep, float("-inf"))


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
        self.model = prepare(model.to(self.device), self.device, train.precision, train.tf32, train.channels_last)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=train.precision == "fp16")
        self.data, self.cfg = data, train
        self.hp = hparams if hparams is not None else self.Hparams()
        self.generator = torch.Generator().manual_seed(self.context.seed)
        self.loading = Loading.for_run(train.num_workers, self.context.device, self.context.cpus)
        self._streams: dict[str, tuple[str, Stream]] = {}
        self._pending_streams: dict[str, tuple[ExampleSet, dict]] = {}
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
        self.schedule = make_schedule(self.optimizer, train, -(-len(self.train_set) // train.batch_size))
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
        return self.train_loss(self.model(batch.x), batch.y)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {}

    def pass_statistics(self, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example statistics of `batch` (on the device) a method records during an evaluation pass
        (`outputs(..., statistics=True)`), so that no second pass is needed; default: none."""
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
        """One pass over the training set (hooks included, no evaluation); returns the epoch's metrics.

        A trainer restored mid-epoch continues the same pass (its epoch-start hook already ran)."""
        self._epoch_t0 = time.perf_counter()
        self.model.train()
        fresh = self._progress is None
        if fresh:
            with self.autocast():
                self.on_epoch_start(self.epoch)
            self._progress = {"losses": [], "elapsed": 0.0}
        stream = self.stream("train", "train_set", self.cfg.batch_size, workers=self.loading.num_workers)
        losses = self._progress["losses"]
        step_cbs = [cb for cb in self.context.callbacks if hasattr(cb, "on_step_end")]
        for _ in range(stream.batches_per_pass if fresh else stream.remaining()):
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

    def fit(self) -> dict[str, Any]:
        """Train for the configured epochs, or until the guard stops a diverged trial (`self.guard.divergence`);
        returns the final metrics (history via callbacks)."""
        metrics: dict[str, float] = dict(self.last_metrics)
        while self.epoch < self.cfg.epochs and not self.guard.stopped:
            with self.guard.catching_nonfinite(self.epoch + 1):
                metrics = self.train_epoch()
            if self.guard.stopped:   # a non-finite loss ended the epoch early
                break
            metrics.update(self.guard.after_epoch(self, self.epoch, metrics["train/loss"]))
            if self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs or self.guard.stopped:
                self.last_evaluation = (self.epoch, *self.evaluate())
                metrics.update(self.last_evaluation[1])
            self.last_metrics = metrics
            for cb in self.context.callbacks:
                cb.on_epoch_end(self, self.epoch, metrics)
        return metrics

    # ---- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def eval_logits(self, batch: Batch) -> torch.Tensor:
        """The classifier's float32 logits of one batch, on the device (called with the model in eval mode)."""
        with self.autocast():
            return self.model(batch.x.to(self.device, non_blocking=True)).float()

    @torch.no_grad()
    def logits(self, examples: ExampleSet, batch_size: int = 512) -> torch.Tensor:
        """Evaluation-mode logits for every example of `examples`, in order."""
        was_training = self.model.training
        self.model.eval()
        out = [self.eval_logits(b).cpu() for b in examples.batches(batch_size, train=False, loading=self.loading)]
        self.model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.data.num_classes)

    @torch.no_grad()
    def outputs(self, examples: ExampleSet, true_labels: bool = True, batch_size: int = 512,
                classes=None, statistics: bool = False) -> Outputs:
        """Predictions and probabilistic margins (against true labels unless told otherwise; against the
        observed ones too), batch by batch: the host keeps O(len(examples)) scalars, never the logits.
        With `classes`, over those classes only (the other logits masked to -inf, the subset-class protocol)."""
        was_training = self.model.training
        self.model.eval()
        preds, margins, observed, stats = [], [], [], defaultdict(list)
        for b in examples.batches(batch_size, train=False, loading=self.loading):
            z = self.eval_logits(b)
            if statistics:
                for k, v in self.pass_statistics(b.to(self.device), z).items():
                    stats[k].append(v.float().cpu())
            if classes is not None:
                z = mask_to(z, classes)
            y_obs = b.y.to(self.device)
            m_obs = probabilistic_margin(z, y_obs)
            preds.append(z.argmax(1).cpu())
            observed.append(m_obs.cpu())
            margins.append(probabilistic_margin(z, b.y_true.to(self.device)).cpu() if true_labels else observed[-1])
        self.model.train(was_training)
        y = examples.true_labels if true_labels else examples.labels
        cat = lambda parts, dtype: (torch.cat(parts) if parts else torch.empty(0, dtype=dtype)).numpy()  # noqa: E731
        return Outputs(ids=examples.ids.numpy(), labels=y.numpy(), preds=cat(preds, torch.long),
                       margins=cat(margins, torch.float), observed_margins=cat(observed, torch.float),
                       statistics={k: torch.cat(v).numpy() for k, v in stats.items()},
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
            observed = name == "selection"   # model selection sees the labels a user has (maybe noisy)
            o = outs[name] = self.outputs(ex, true_labels=not observed, classes=self.data.class_subsets.get(name))
            correct = o.preds == o.labels
            metrics[f"{name}/acc"] = float(correct.mean())
            if observed:
                metrics[f"{name}/acc_true"] = float((o.preds == ex.true_labels.numpy()).mean())
            metrics[f"{name}/margin_mean"] = float(o.margins.mean())
            if o.groups is not None:
                accs = [correct[o.groups == g].mean() for g in np.unique(o.groups)]
                metrics[f"{name}/worst_group_acc"] = float(min(accs))
            if self.data.evaluator is not None and not observed:
                for k, v in self.data.evaluator(name, torch.as_tensor(o.preds), ex).items():
                    metrics[f"{name}/{k}"] = float(v)
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
