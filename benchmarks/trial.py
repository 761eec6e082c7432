"""Run one trial end to end and write its run directory (used by the CLI and the sweep runner)."""
from __future__ import annotations

import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from molere.registry import METHODS
from molere.trainer import RunContext, Trainer

from . import catalog  # noqa: F401  (registers everything)
from .config import TrialConfig, erm_reference_config, identity, resolve, trial_id
from .data import load_task
from .models import build_model, model_factory
from .store import RunDir


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class StoreLog:
    """Callback: append every epoch's metrics to the run directory (and checkpoint when asked)."""

    def __init__(self, run: RunDir, checkpoint: bool):
        self.run, self.checkpoint = run, checkpoint

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None:
        self.run.append_metrics({"epoch": epoch, **{k: v for k, v in metrics.items() if k != "epoch"}})
        if self.checkpoint:
            self.run.save_checkpoint(trainer.state_dict())


class StoreReference:
    """Finds the ERM run of the same key in a store directory (sibling trial directories)."""

    def __init__(self, store_root: str | os.PathLike | None, cfg: TrialConfig):
        self.root = None if store_root is None else Path(store_root)
        self.erm_dir = None if self.root is None else RunDir(self.root / trial_id(erm_reference_config(cfg)))

    def erm_pool_margins(self):
        if self.erm_dir is None or self.erm_dir.status != "done":
            return None
        m = self.erm_dir.margins()
        return (m["pool_ids"], m["pool_margins"]) if "pool_ids" in m else None


def versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("torch", "timm", "ray", "wandb", "numpy", "molere-bench"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def run_trial(cfg: TrialConfig, out_dir: str | os.PathLike, *, callbacks: tuple = (), store_root=None,
              checkpoint: bool = False) -> dict[str, Any]:
    """Train and evaluate one configuration; writes the run directory and returns the result dict."""
    cfg = resolve(cfg)
    run = RunDir(out_dir)
    tid = trial_id(cfg)
    resume = run.start({"trial_id": tid, "config": cfg.model_dump(mode="json"), "identity": identity(cfg),
                        "versions": versions()})
    t0 = time.perf_counter()
    try:
        seed_everything(cfg.seed)
        task = load_task(cfg.dataset, cfg.regime, cfg.seed)
        device = resolve_device(cfg.train.device)
        factory = model_factory(cfg.model.name, task.num_classes, task.input_shape, cfg.model.options)
        seed_everything(cfg.seed)
        model = factory()
        method = METHODS.get(cfg.method.name)
        hp = method.Hparams.model_validate(cfg.method.hparams)
        context = RunContext(seed=cfg.seed, device=device, model_factory=factory,
                             reference=StoreReference(store_root, cfg),
                             callbacks=[StoreLog(run, checkpoint), *callbacks], run_config=cfg.model_dump(mode="json"))
        trainer = method(model, task, cfg.train.model_copy(update={"device": device}), hp, context)
        if resume:
            trainer.load_state_dict(torch.load(run.file("checkpoint.pt"), map_location=device, weights_only=False))
        final = trainer.fit()
        last = trainer.last_evaluation
        metrics, outs = last[1:] if last and last[0] == trainer.epoch else trainer.evaluate()
        metrics = dict(metrics)
        train_out = trainer.outputs(trainer.train_set, true_labels=False)
        metrics["train/acc_observed"] = float((train_out.preds == train_out.labels).mean())
        metrics["train/acc_true"] = float((train_out.preds == trainer.train_set.true_labels.numpy()).mean())
        arrays = {}
        for name, o in outs.items():
            arrays.update({f"{name}_ids": o.ids, f"{name}_labels": o.labels, f"{name}_preds": o.preds,
                           f"{name}_margins": o.margins})
        if trainer.saves_pool_margins:
            p = trainer.outputs(task.pool(), true_labels=False)
            arrays.update({"pool_ids": p.ids, "pool_margins": p.margins})
        run.save_margins(arrays)
        result = {"trial_id": tid, "status": "done", "metrics": {**final, **metrics},
                  "info": task.info, "method_info": trainer.info,
                  "wall_time_s": time.perf_counter() - t0}
        run.finish(result)
        return result
    except BaseException as exc:
        run.fail(exc)
        raise
