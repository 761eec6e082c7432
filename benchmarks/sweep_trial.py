"""One sweep trial inside a worker: thread count, W&B run, and fault capture (no Ray imports here).

`run_one(spec)` never raises for a failing trial: the failure is written to the trial's directory
(failed.json with reason and traceback) and returned, so one bad trial never stops the sweep.
"""
from __future__ import annotations

import os
import socket
import traceback

from .store import RunDir, write_json


def trial_spec(planned, sweep, wandb_settings: dict | None) -> dict:
    """Everything a worker needs to run one planned trial (plain JSON; paths absolute)."""
    trials = (sweep.directory / "trials").resolve()
    return {"trial_id": planned.trial_id, "labels": planned.labels, "sweep": sweep.name,
            "config": planned.config.model_dump(mode="json"), "out_dir": str(trials / planned.trial_id),
            "store_root": str(trials), "erm_dir": str(trials / planned.erm_id),
            "checkpoint": sweep.store.checkpoint, "checkpoint_steps": sweep.store.checkpoint_steps,
            "checkpoint_minutes": sweep.store.checkpoint_minutes, "cpu": sweep.resources.cpu, "wandb": wandb_settings}


def _erm_partner(spec: dict) -> dict | None:
    erm = RunDir(spec["erm_dir"])
    if spec["erm_dir"] == spec["out_dir"] or erm.status != "done":
        return None
    try:
        return {"metrics": erm.result()["metrics"], "margins": erm.margins()}
    except (OSError, ValueError, KeyError):
        return None


def run_one(spec: dict, placement: dict | None = None) -> dict:
    """Run the trial of `spec`; returns {"status": "done"|"failed", ...} and never raises on trial errors."""
    import torch

    from .config import TrialConfig
    from .trial import run_trial
    from .wandb_log import TrialLogger

    torch.set_num_threads(max(1, int(spec["cpu"])))
    run = RunDir(spec["out_dir"])
    run.path.mkdir(parents=True, exist_ok=True)
    where = {"hostname": socket.gethostname(), "pid": os.getpid(), **(placement or {})}
    write_json(run.file("placement.json"), where)
    logger = TrialLogger(spec.get("wandb"), trial_id=spec["trial_id"], sweep=spec["sweep"],
                         labels=spec["labels"], config=spec["config"])
    code = 1
    try:
        try:
            result = run_trial(TrialConfig.model_validate(spec["config"]), run.path, callbacks=(logger,),
                               store_root=spec["store_root"], checkpoint=spec["checkpoint"],
                               checkpoint_steps=spec.get("checkpoint_steps"),
                               checkpoint_minutes=spec.get("checkpoint_minutes"), cpus=spec["cpu"])
        except Exception as exc:  # noqa: BLE001 - a failing trial is recorded, never propagated
            if run.status != "failed":
                run.fail(exc)
            error = f"{type(exc).__name__}: {exc}"
            logger.failed(error)
            return {"status": "failed", "error": error, **where}
        code = 0
        try:
            logger.final(result, run.margins(), _erm_partner(spec))
        except Exception:  # noqa: BLE001 - reading back for logging must not fail a done trial
            traceback.print_exc()
        return {"status": "done", "test_acc": result["metrics"].get("test/acc"), **where}
    finally:
        logger.finish(exit_code=code)
