"""The ERM reference of a trial's key in the result store, and its out-of-fold models as store jobs.

<store>/<reference trial>/margins.npz             its pool margins (pool_ids, pool_margins) and test outputs
<store>/<reference trial>/oof-K/fold-k/           out-of-fold model k of K: a run directory of its own
                                                  (config, metrics, checkpoint, margins.npz: ids, margins)

`StoreReference` serves what is there (`molere.reference.Reference`) and records the files it served, so
that store verification can tell when they change. `run_fold` trains one out-of-fold model, checkpointed
and resumed like any trial, and scores its held-out fold once, at the end.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from molere.reference import ReferenceMargins, ReferencePredictions
from molere.reference_runs import fold_margins, fold_trainer
from molere.trainer import RunContext

from benchmarks.trial.config import TrialConfig, erm_reference_config, identity, resolve, trial_id
from benchmarks.trial.store import RunDir, fingerprint

FOLD_JOB = "oof_fold"   # the `job` of a sweep spec that trains an out-of-fold model


def oof_dir(reference_dir: str | os.PathLike, folds: int, fold: int) -> Path:
    """The run directory of out-of-fold model `fold` of `folds`, inside the reference trial's directory."""
    return Path(reference_dir) / f"oof-{folds}" / f"fold-{fold}"


def fold_job_id(reference_id: str, folds: int, fold: int) -> str:
    return f"{reference_id}-oof{folds}-{fold}"


class StoreReference:
    """The reference results of `cfg`'s key found in a store directory (None where absent or not done)."""

    def __init__(self, store_root: str | os.PathLike | None, cfg: TrialConfig):
        self.root = None if store_root is None else Path(store_root)
        self.erm_dir = None if self.root is None else RunDir(self.root / trial_id(erm_reference_config(cfg)))
        self.used: dict | None = None   # the reference files served (recorded in result.json, verified by the store)

    def _read(self, run: RunDir, keys: tuple[str, ...]) -> dict | None:
        if run.status != "done":
            return None
        m = run.margins()
        if not set(keys) <= set(m):
            return None
        rel = run.file("margins.npz").relative_to(self.erm_dir.path).as_posix()
        sha = fingerprint(run.file("margins.npz"))["sha256"]
        self.used = self.used or {"trial_id": self.erm_dir.path.name, "files": {}}
        self.used["files"][rel] = sha
        if rel == "margins.npz":
            self.used["margins_sha256"] = sha
        return m

    def pool_margins(self) -> ReferenceMargins | None:
        m = None if self.erm_dir is None else self._read(self.erm_dir, ("pool_ids", "pool_margins"))
        return None if m is None else ReferenceMargins(m["pool_ids"], m["pool_margins"])

    def oof_margins(self, folds: int) -> ReferenceMargins | None:
        if self.erm_dir is None or not all(RunDir(oof_dir(self.erm_dir.path, folds, k)).status == "done"
                                           for k in range(folds)):
            return None
        parts = [self._read(RunDir(oof_dir(self.erm_dir.path, folds, k)), ("ids", "margins")) for k in range(folds)]
        if any(p is None for p in parts):
            return None
        return ReferenceMargins(*(np.concatenate([p[k] for p in parts]) for k in ("ids", "margins")))

    def test_outputs(self) -> ReferencePredictions | None:
        m = None if self.erm_dir is None else self._read(self.erm_dir, ("test_ids", "test_preds", "test_margins"))
        return None if m is None else ReferencePredictions(m["test_ids"], m["test_preds"], m["test_margins"])


def run_fold(cfg: TrialConfig, folds: int, fold: int, out_dir: str | os.PathLike, *, checkpoint: bool = False,
             checkpoint_steps: int | None = None, checkpoint_minutes: float | None = None,
             cpus: float | None = None) -> dict:
    """Train out-of-fold model `fold` of `folds` of the reference of `cfg`'s key into `out_dir` (resumed from
    its checkpoint with `checkpoint`); its margins.npz holds the held-out fold's ids and margins. Runs with
    `trial_threads(cpus)` torch threads, like every trial (the caller's count is restored after)."""
    from benchmarks.trial.execute import trial_threads
    threads = torch.get_num_threads()
    torch.set_num_threads(trial_threads(cpus))
    try:
        return _run_fold(cfg, folds, fold, out_dir, checkpoint, checkpoint_steps, checkpoint_minutes, cpus)
    finally:
        torch.set_num_threads(threads)


def _run_fold(cfg: TrialConfig, folds: int, fold: int, out_dir, checkpoint: bool, checkpoint_steps: int | None,
              checkpoint_minutes: float | None, cpus: float | None) -> dict:
    from benchmarks.trial.execute import Checkpointer, StoreLog, prepare, versions
    cfg = resolve(erm_reference_config(cfg))
    ref_id = trial_id(cfg)
    jid = fold_job_id(ref_id, folds, fold)
    run = RunDir(out_dir)
    resume = run.start({"trial_id": jid, "config": cfg.model_dump(mode="json"), "identity": identity(cfg),
                        "reference_of": ref_id, "folds": folds, "fold": fold, "versions": versions()},
                       checkpoint=checkpoint)
    t0 = time.perf_counter()
    try:
        task, device, factory = prepare(cfg)
        saving = [Checkpointer(run, jid, checkpoint_steps, checkpoint_minutes)] if checkpoint else []
        context = RunContext(seed=cfg.seed, device=device, model_factory=factory, cpus=cpus,
                             callbacks=[StoreLog(run), *saving])
        trainer = fold_trainer(task, cfg.train.model_copy(update={"device": device}), context, folds, fold)
        if resume is not None:
            trainer.load_state_dict(resume)
        ids, margins = fold_margins(trainer)
        run.save_margins({"ids": ids, "margins": margins})
        result = {"trial_id": jid, "status": "done", "reference_of": ref_id, "folds": folds, "fold": fold,
                  "metrics": dict(trainer.last_metrics), "wall_time_s": time.perf_counter() - t0}
        run.finish(result)
        return result
    except BaseException as exc:
        run.fail(exc)
        raise


def run_fold_spec(spec: dict) -> dict:
    """`run_fold` for a sweep spec of job `FOLD_JOB`."""
    return run_fold(TrialConfig.model_validate(spec["config"]), spec["folds"], spec["fold"], spec["out_dir"],
                    checkpoint=spec["checkpoint"], checkpoint_steps=spec.get("checkpoint_steps"),
                    checkpoint_minutes=spec.get("checkpoint_minutes"), cpus=spec["cpu"])
