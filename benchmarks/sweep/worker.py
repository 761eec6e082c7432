"""One sweep trial inside a worker: W&B run, its log file and fault capture (no Ray imports here; threads:
`benchmarks.trial.execute.trial_threads`).

`run_one(spec)` never raises for a failing trial: the failure is written to the trial's directory
(failed.json with reason and traceback) and returned, so one bad trial never stops the sweep. The trial
runs in a process tree under a leader child of the worker (`proctree`): a trial that overruns its time
limit is killed with everything it started, one that dies (a signal, `os._exit`, the out-of-memory killer)
is recorded with its cause by the surviving worker, and none outlives the worker.
"""
from __future__ import annotations

import contextlib
import datetime
import multiprocessing
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from benchmarks.sweep.proctree import TrialLock, exit_as, kill_tree, lead
from benchmarks.trial.store import FINISHED, RunDir, write_json

LOG_FILE = "trial.log"      # every attempt's stdout/stderr, appended
# Imported once by the worker's fork server, so no trial process pays for them: the trial code, the W&B
# modules `wandb.init` imports on first use, and the data loaders' packages (benchmarks.perf, setting "trial").
TRIAL_IMPORTS = ["benchmarks.trial.execute", "benchmarks.wandb_io.log", "benchmarks.wandb_io.reader", "wandb",
                 "wandb.sdk.launch.inputs.internal", "sklearn.datasets", "mnist1d.data", "benchmarks.sweep.proctree"]
ERM_FACTOR = 20             # a derived time limit: 20 x the wall time of the trial's ERM reference,
MIN_LIMIT_S = 600           # at least 10 minutes;
UNMEASURED_S_PER_EPOCH = 7200   # 2 hours per epoch for ERM trials and trials with no finished ERM trial
JOIN_S = 3600.0                # the longest single wait on a trial process


def trial_spec(planned, sweep, wandb_settings: dict | None) -> dict:
    """Everything a worker needs to run one planned trial (plain JSON; paths absolute)."""
    trials = (sweep.directory / "trials").resolve()
    return {"trial_id": planned.trial_id, "labels": planned.labels, "sweep": sweep.name,
            "config": planned.config.model_dump(mode="json"), "out_dir": str(trials / planned.trial_id),
            "store_root": str(trials), "erm_dir": str(trials / planned.erm_id),
            "checkpoint": sweep.store.checkpoint, "checkpoint_steps": sweep.store.checkpoint_steps,
            "checkpoint_minutes": sweep.store.checkpoint_minutes, "cpu": sweep.resources.cpu, "wandb": wandb_settings,
            "time_limit_s": sweep.resources.time_limit_s}


def _erm_partner(spec: dict) -> dict | None:
    erm = RunDir(spec["erm_dir"])
    if spec["erm_dir"] == spec["out_dir"] or erm.status != "done":
        return None
    try:
        return {"metrics": erm.result()["metrics"], "margins": erm.margins()}
    except (OSError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def output_to(path: Path):
    """Append this process's stdout and stderr to `path`: Python streams and file descriptors 1 and 2
    (so C-level output and child processes such as wandb's service land there too). wandb is not
    silenced there: its warnings belong in the trial's log."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(1), os.dup(2)
    silent = os.environ.pop("WANDB_SILENT", None)
    with open(path, "a", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield f
        finally:
            f.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if silent is not None:
                os.environ["WANDB_SILENT"] = silent


def _oom_kills() -> int | None:
    """The cgroup's count of out-of-memory kills (cgroup v2), or None where it cannot be read."""
    try:
        for line in open("/sys/fs/cgroup/memory.events"):
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def death_cause(exitcode: int, oom_before: int | None) -> str:
    """Why a trial process ended without recording a result."""
    if exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else f"signal {-exitcode}"
        cause = f"trial process killed by {name}"
        oom_after = _oom_kills()
        if name == "SIGKILL":
            oom = oom_before is not None and oom_after is not None and oom_after > oom_before
            cause += " (the out-of-memory killer did)" if oom else " (likely out of memory: the OOM killer sends SIGKILL)"
        return cause
    return f"trial process exited with code {exitcode} before recording a result"


def _child(spec: dict, placement: dict | None, secrets: dict, worker_pid: int) -> None:
    """The trial's leader: waits for an earlier run of the same trial to end, then runs it (see proctree)."""
    os.setpgrp()
    run = RunDir(spec["out_dir"])
    TrialLock(run.path).acquire(lambda holder: _note(
        run, f"=== trial {spec['trial_id']} is still running elsewhere ({holder}); waiting for it to end"))
    if run.status in FINISHED:
        _note(run, f"=== trial {spec['trial_id']} was completed by that run; not run again")
        os._exit(0)
    os.environ.update(secrets)
    exit_as(lead(lambda: _trial_process(spec, placement), worker_pid))


def _trial_process(spec: dict, placement: dict | None) -> int:
    run_logged(spec, placement)
    return 0


def time_limit(spec: dict) -> float:
    """The trial's time limit: resources.time_limit_s, else derived (docs/sweeps.md, "Failures"):
    ERM_FACTOR x its ERM trial's wall time (at least MIN_LIMIT_S), or UNMEASURED_S_PER_EPOCH per epoch."""
    if spec.get("time_limit_s"):
        return float(spec["time_limit_s"])
    erm = RunDir(spec["erm_dir"])
    if spec["erm_dir"] != spec["out_dir"] and erm.status == "done":
        try:
            return max(MIN_LIMIT_S, ERM_FACTOR * float(erm.result()["wall_time_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return UNMEASURED_S_PER_EPOCH * max(1, int(spec["config"]["train"]["epochs"]))


def run_one(spec: dict, placement: dict | None = None, secrets: dict | None = None) -> dict:
    """Run the trial of `spec` in a child process within its time limit; returns {"status": ...} and
    never raises on trial errors. The child's stdout/stderr (every attempt, tracebacks and W&B messages
    included) go to <trial>/trial.log, and so does the cause of a time limit or a death."""
    run = RunDir(spec["out_dir"])
    run.path.mkdir(parents=True, exist_ok=True)
    limit = time_limit(spec)
    ctx = multiprocessing.get_context("forkserver")
    # in a Ray worker each child would otherwise import ray again (the worker's main module imports it)
    ctx.set_forkserver_preload(TRIAL_IMPORTS + ["ray"] * ("ray" in sys.modules))
    oom_before = _oom_kills()
    proc = ctx.Process(target=_child, args=(spec, placement, dict(secrets or {}), os.getpid()), daemon=False)
    run.file("failed.json").unlink(missing_ok=True)   # a failure left by an earlier run is not this one's
    t0 = time.monotonic()
    proc.start()
    while proc.exitcode is None and (left := t0 + limit - time.monotonic()) > 0:
        proc.join(min(left, JOIN_S))      # in parts: one wait is capped near 24.8 days (poll's int milliseconds)
    if proc.exitcode is None:             # over the limit: stop it and whatever it started
        kill_tree(proc.pid)
        proc.join()
        _note(run, f"=== trial {spec['trial_id']} stopped: time limit of {limit:g} s exceeded")
        run.fail_with(f"TimeLimitExceeded: time limit of {limit:g} s exceeded (stopped after "
                      f"{time.monotonic() - t0:.0f} s); raise resources.time_limit_s if it needs longer",
                      cause="time limit")
    elif run.status not in (*FINISHED, "failed"):
        cause = death_cause(proc.exitcode, oom_before)
        _note(run, f"=== trial {spec['trial_id']} died: {cause}")
        run.fail_with(f"WorkerDied: {cause}", cause="worker died", exitcode=proc.exitcode)
    out = {"status": run.status}
    if out["status"] == "failed":
        out["error"] = run.failure().get("error", "")
    return out


def _note(run: RunDir, line: str) -> None:
    with open(run.file(LOG_FILE), "a") as f:
        print(line, file=f)


def run_logged(spec: dict, placement: dict | None = None) -> dict:
    """Run the trial of `spec` in this process (the body of the child), its output appended to trial.log."""
    run = RunDir(spec["out_dir"])
    run.path.mkdir(parents=True, exist_ok=True)
    with output_to(run.file(LOG_FILE)) as log:
        where = {"hostname": socket.gethostname(), "pid": os.getpid(), **(placement or {})}
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        print(f"=== trial {spec['trial_id']} attempt started {stamp} on {where['hostname']} (pid {where['pid']})",
              file=log, flush=True)
        out = _run(spec, run, where)
        print(f"=== trial {spec['trial_id']} {out['status']}"
              + (f": {out['error']}" if out.get("error") else ""), file=log, flush=True)
        return out


def run_in_process(spec: dict, callbacks: tuple = ()) -> dict:
    """Run the trial of `spec` in this process, its output on this terminal, with extra trainer callbacks
    (benchmarks.train): the same W&B run, store and checkpoints as a sweep trial. A failure is recorded,
    then raised."""
    run = RunDir(spec["out_dir"])
    run.path.mkdir(parents=True, exist_ok=True)
    return _run(spec, run, {"hostname": socket.gethostname(), "pid": os.getpid()}, callbacks, reraise=True)


def _run(spec: dict, run: RunDir, where: dict, callbacks: tuple = (), reraise: bool = False) -> dict:
    from benchmarks.trial.config import TrialConfig
    from benchmarks.trial.execute import run_trial
    from benchmarks.trial.reference import FOLD_JOB, run_fold_spec
    from benchmarks.wandb_io.log import TrialLogger

    write_json(run.file("placement.json"), where)
    logger = TrialLogger(spec.get("wandb"), trial_id=spec["trial_id"], sweep=spec["sweep"],
                         labels=spec["labels"], config=spec["config"])
    code = 1
    try:
        try:
            if spec.get("job") == FOLD_JOB:   # an out-of-fold reference model (benchmarks.trial.reference)
                result = run_fold_spec(spec)
            else:
                result = run_trial(TrialConfig.model_validate(spec["config"]), run.path,
                                   callbacks=(logger, *callbacks), store_root=spec["store_root"],
                                   checkpoint=spec["checkpoint"], checkpoint_steps=spec.get("checkpoint_steps"),
                                   checkpoint_minutes=spec.get("checkpoint_minutes"), cpus=spec["cpu"])
        except Exception as exc:  # noqa: BLE001 - a failing trial is recorded, never propagated
            if not reraise:
                traceback.print_exc()
            if run.status != "failed":
                run.fail(exc)
            error = f"{type(exc).__name__}: {exc}"
            logger.failed(error, run.path, str(run.file(LOG_FILE)))
            if reraise:
                raise
            return {"status": "failed", "error": error, **where}
        code = 0
        try:
            logger.final(result, run.margins(), _erm_partner(spec), run.path)
        except Exception:  # noqa: BLE001 - reading back for logging must not fail a done trial
            traceback.print_exc()
        return {"status": result["status"], "test_acc": result["metrics"].get("test/acc"), **where}
    finally:
        logger.finish(exit_code=code)
