"""Run one trial end to end and write its run directory (used by the CLI and the sweep runner)."""
from __future__ import annotations

import functools
import os
import platform
import random
import sys
import time
from typing import Any

import numpy as np
import torch

from molere.registry import METHODS
from molere.trainer import Callback, RunContext, Trainer

from benchmarks import catalog  # noqa: F401  (registers everything)
from benchmarks.trial.config import TrialConfig, identity, method_hparams, resolve, trial_id
from benchmarks.data.load import load_task
from benchmarks.models import model_factory, pretrained_data_config
from benchmarks.trial.reference import StoreReference
from benchmarks.trial.store import RunDir


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def trial_threads(cpus: float | None) -> int:
    """The one thread policy of every entry point (sweep worker, `benchmarks.train`, tests): a trial's torch
    intra-op threads = its CPUs (`resources.cpu`, `--cpus`), 1 when not given (a sweep's default), so a trial
    rerun alone computes what it computed in the sweep, bit for bit."""
    return max(1, int(cpus)) if cpus else 1


def resolve_device(device: str) -> str:
    """`auto` -> cuda when a GPU is visible, else cpu; the choice is logged (one line on stderr)."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        chosen, why = "cuda", f"{torch.cuda.device_count()} visible, {torch.cuda.get_device_name(0)}"
    else:
        chosen, why = "cpu", "no CUDA device visible"
    print(f"benchmarks.trial.execute: device auto -> {chosen} ({why})", file=sys.stderr, flush=True)
    return chosen


class StoreLog(Callback):
    """Callback: append every epoch's metrics to the run directory."""

    def __init__(self, run: RunDir):
        self.run = run

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None:
        self.run.append_metrics({"epoch": epoch, **{k: v for k, v in metrics.items() if k != "epoch"}})


class Checkpointer(Callback):
    """Callback: save the trainer's state at every epoch end and every `steps` steps or `minutes` minutes."""

    def __init__(self, run: RunDir, trial_id: str, steps: int | None = None, minutes: float | None = None):
        self.run, self.trial_id, self.steps, self.minutes = run, trial_id, steps, minutes
        self.last = time.monotonic()

    def on_step_end(self, trainer: Trainer, step: int, metrics: dict) -> None:
        if (self.steps and step % self.steps == 0) or (
                self.minutes and time.monotonic() - self.last >= 60 * self.minutes):
            self.save(trainer)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None:
        self.save(trainer)

    def save(self, trainer: Trainer) -> None:
        self.run.save_checkpoint(trainer.state_dict(), self.trial_id)
        self.last = time.monotonic()


def pool_margins(trainer: Trainer, task, train_out, outs: dict) -> dict[str, np.ndarray]:
    """The reference's margins (observed labels) on train + val, from the end-of-trial passes already made."""
    parts = [train_out if trainer.train_set is task.train else trainer.outputs(task.train, true_labels=False)]
    if task.val is not None and len(task.val):
        parts.append(outs["val"] if "val" in outs else trainer.outputs(task.val, true_labels=False))
    return {"pool_ids": np.concatenate([p.ids for p in parts]),
            "pool_margins": np.concatenate([p.observed_margins for p in parts])}


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "timm", "ray", "wandb", "wandb-workspaces", "numpy", "molere-bench"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return tuple(out.items())


def versions() -> dict[str, str]:
    """Python and key package versions (read once per process)."""
    return dict(_versions())


def prepare(cfg: TrialConfig):
    """(task, device, model factory) of a resolved trial configuration, every global RNG seeded by its seed."""
    seed_everything(cfg.seed)
    task = load_task(cfg.dataset, cfg.regime, cfg.seed, pretrained_data_config(cfg.model.name, cfg.model.options))
    device = resolve_device(cfg.train.device)
    factory = model_factory(cfg.model.name, task.num_classes, task.input_shape, cfg.model.options)
    seed_everything(cfg.seed)
    return task, device, factory


def run_trial(cfg: TrialConfig, out_dir: str | os.PathLike, *, callbacks: tuple = (), store_root=None,
              checkpoint: bool = False, checkpoint_steps: int | None = None, checkpoint_minutes: float | None = None,
              cpus: float | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; writes the run directory and returns the result dict.

    With `checkpoint`, the trainer's state is saved at every epoch end and every `checkpoint_steps`
    steps / `checkpoint_minutes` minutes, and a rerun resumes from it (mid-epoch, bit for bit on CPU). Runs with
    `trial_threads(cpus)` torch threads (the caller's count is restored after). A trial the guard judged
    diverged (molere.guard) is sealed like a done one, with "status": "diverged"."""
    threads = torch.get_num_threads()
    torch.set_num_threads(trial_threads(cpus))
    try:
        return _run_trial(resolve(cfg), RunDir(out_dir), callbacks, store_root, checkpoint, checkpoint_steps,
                          checkpoint_minutes, cpus)
    finally:
        torch.set_num_threads(threads)


def _run_trial(cfg: TrialConfig, run: RunDir, callbacks: tuple, store_root, checkpoint: bool,
               checkpoint_steps: int | None, checkpoint_minutes: float | None, cpus: float | None) -> dict[str, Any]:
    tid = trial_id(cfg)
    resume = run.start({"trial_id": tid, "config": cfg.model_dump(mode="json"), "identity": identity(cfg),
                        "versions": versions()}, checkpoint=checkpoint)
    t0 = time.perf_counter()
    try:
        task, device, factory = prepare(cfg)
        model = factory()
        method, hp = method_hparams(cfg)
        saving = [Checkpointer(run, tid, checkpoint_steps, checkpoint_minutes)] if checkpoint else []
        reference = StoreReference(store_root, cfg)
        context = RunContext(seed=cfg.seed, device=device, model_factory=factory, reference=reference, cpus=cpus,
                             callbacks=[StoreLog(run), *saving, *callbacks], run_config=cfg.model_dump(mode="json"))
        trainer = method(model, task, cfg.train.model_copy(update={"device": device}), hp, context)
        if resume is not None:
            trainer.load_state_dict(resume)
        final = trainer.fit()
        last = trainer.last_evaluation
        metrics, outs = last[1:] if last and last[0] == trainer.epoch else trainer.evaluate()
        metrics = dict(metrics)
        train_out = trainer.outputs(trainer.train_set, true_labels=False, statistics=True)   # the one pass over train
        metrics["train/acc_observed"] = float((train_out.preds == train_out.labels).mean())
        metrics["train/acc_true"] = float((train_out.preds == trainer.train_set.true_labels.numpy()).mean())
        arrays = {}
        for name, o in outs.items():
            arrays.update({f"{name}_ids": o.ids, f"{name}_labels": o.labels, f"{name}_preds": o.preds,
                           f"{name}_margins": o.margins})
        divergence = trainer.guard.divergence
        if cfg.method.name == METHODS.reference() and divergence is None:   # a diverged ERM is nobody's reference
            arrays.update(pool_margins(trainer, task, train_out, outs))
        run.save_margins(arrays)
        diagnose = getattr(trainer, "reweighting_diagnostics", None)   # weight networks and recorded weights
        diagnostics = diagnose(train_out) if diagnose is not None else None
        result = {"trial_id": tid, "status": "done" if divergence is None else "diverged",
                  "metrics": {**final, **metrics},
                  "info": task.info, "method_info": trainer.info,
                  "reweighting": diagnostics, "threads": torch.get_num_threads(),
                  "wall_time_s": time.perf_counter() - t0}
        if reference.used:
            result["reference"] = reference.used
        if divergence is not None:
            result.update(diverged_epoch=divergence.epoch, diverged_reason=divergence.reason,
                          diverged_criterion=divergence.criterion)
        run.finish(result)
        return result
    except BaseException as exc:
        run.fail(exc)
        raise
