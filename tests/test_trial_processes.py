"""A trial's processes (no Ray here): the time limit kills the whole tree, whatever sessions it starts; a trial
dies with its worker; a second run of a trial waits for the first; the store rejects disordered epoch rows."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from benchmarks.sweep.proctree import TrialLock, kill_tree
from benchmarks.sweep.worker import run_one, time_limit
from benchmarks.trial.config import TrialConfig
from benchmarks.trial.execute import run_trial
from benchmarks.trial.store import RunDir

# a step that starts a new-session grandchild and a daemon (double fork: its parent leaves at once), then hangs
HANG = '''
import os, subprocess, sys, time
from molere.registry import register_method
from molere.trainer import Trainer

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


@register_method("{name}")
class Hang(Trainer):
    """Starts a setsid grandchild and a daemon, records every pid, then hangs."""
    def training_step(self, batch):
        path = os.environ["HANG_PIDS"]
        kid = subprocess.Popen(SLEEPER, start_new_session=True).pid
        if os.fork() == 0:
            os.setsid()
            daemon = subprocess.Popen(SLEEPER).pid
            with open(path + ".daemon", "w") as f:
                f.write(str(daemon))
            os._exit(0)
        while not os.path.exists(path + ".daemon"):
            time.sleep(0.05)
        with open(path, "w") as f:
            f.write(" ".join(map(str, [os.getpid(), kid, int(open(path + ".daemon").read())])))
        time.sleep(600)
'''


def spec_for(tmp_path: Path, method: str = "erm", limit: float | None = 600, epochs: int = 2) -> dict:
    cfg = TrialConfig.model_validate({"dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [8]}},
                                      "method": {"name": method}, "train": {"epochs": epochs, "batch_size": 256},
                                      "plugins": [method] if method.startswith("hang_") else []})
    out = tmp_path / "trials" / "t1"
    return {"trial_id": "t1", "labels": {"method": method}, "sweep": "s", "config": cfg.model_dump(mode="json"),
            "out_dir": str(out), "store_root": str(out.parent), "erm_dir": str(out), "checkpoint": False,
            "checkpoint_steps": None, "checkpoint_minutes": None, "cpu": 1, "wandb": None, "time_limit_s": limit}


def hanging(tmp_path: Path, monkeypatch) -> str:
    name = f"hang_{os.urandom(4).hex()}"
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / f"{name}.py").write_text(HANG.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path / "plug"))
    return name


def pids_of(path: Path, timeout: float = 180) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (path.exists() and len(path.read_text().split()) == 3):
        time.sleep(0.1)
    return [int(p) for p in path.read_text().split()]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_time_limit_kills_new_session_grandchildren_and_daemons(tmp_path, monkeypatch):
    name = hanging(tmp_path, monkeypatch)
    pids = tmp_path / "pids"
    out = run_one(spec_for(tmp_path, name, limit=25), secrets={"HANG_PIDS": str(pids)})
    assert out["status"] == "failed" and out["error"].startswith("TimeLimitExceeded: time limit of 25 s"), out
    trial, kid, daemon = pids_of(pids, timeout=0)       # written by the step: the trial did start them
    assert [p for p in (trial, kid, daemon) if alive(p)] == []


def test_a_limit_longer_than_one_wait_runs_the_trial(tmp_path):
    """300 epochs unmeasured = 2.16e6 s: more than one wait on a process can take (poll's int milliseconds)."""
    assert run_one(spec_for(tmp_path, limit=300 * 7200.0))["status"] == "done"


def _worker(spec: dict, secrets: dict) -> None:
    run_one(spec, secrets=secrets)


def test_a_trial_dies_with_its_worker(tmp_path, monkeypatch):
    name = hanging(tmp_path, monkeypatch)
    pids = tmp_path / "pids"
    worker = multiprocessing.get_context("spawn").Process(
        target=_worker, args=(spec_for(tmp_path, name, limit=3600), {"HANG_PIDS": str(pids)}))
    worker.start()
    trial, kid, daemon = pids_of(pids)
    assert all(alive(p) for p in (trial, kid, daemon))
    os.kill(worker.pid, signal.SIGKILL)                  # what Ray does to a sweep's workers when its driver dies
    worker.join()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in (trial, kid, daemon)):
        time.sleep(0.1)
    left = [p for p in (trial, kid, daemon) if alive(p)]
    kill_tree(trial)
    for p in left:
        kill_tree(p)
    assert left == []


@pytest.mark.parametrize("done_meanwhile", [False, True])
def test_a_second_run_of_a_trial_waits_for_the_first(tmp_path, done_meanwhile):
    spec = spec_for(tmp_path)
    run = RunDir(spec["out_dir"])
    run.path.mkdir(parents=True)
    first = TrialLock(run.path)                # the first run of the trial, still going
    first.acquire()
    result = {}
    second = threading.Thread(target=lambda: result.update(run_one(spec)))
    second.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and "still running elsewhere" not in (
            run.file("trial.log").read_text() if run.file("trial.log").exists() else ""):
        time.sleep(0.1)
    time.sleep(1)
    assert second.is_alive() and not run.file("config.json").exists()     # waiting, nothing written
    if done_meanwhile:
        run_trial(TrialConfig.model_validate(spec["config"]), run.path)
        stamp = run.file("config.json").stat().st_mtime_ns
    first.file.close()
    second.join(300)
    assert result == {"status": "done"}
    assert [r["epoch"] for r in run.metrics()] == [1, 2] and run.status == "done"
    log = run.file("trial.log").read_text()
    if done_meanwhile:
        assert "was completed by that run; not run again" in log and "attempt started" not in log
        assert run.file("config.json").stat().st_mtime_ns == stamp
    else:
        assert "attempt started" in log


def completed(root: Path, epochs: list[int]) -> RunDir:
    run = RunDir(root / "a")
    run.start({"trial_id": "a", "config": {}})
    for e in epochs:
        run.append_metrics({"epoch": e, "train/loss": 1.0 / e})
    run.save_margins({"test_ids": np.arange(3), "test_margins": np.zeros(3)})
    run.finish({"trial_id": "a", "status": "done", "metrics": {}})
    return run


@pytest.mark.parametrize("epochs", [[3, 1, 4, 2, 5, 3, 6, 4, 5, 6], [1, 2, 2, 3], [1, 3], [2, 3], [1, 2, 3, 1]])
def test_disordered_or_duplicated_epoch_rows_are_not_trusted(tmp_path, epochs):
    run = completed(tmp_path, epochs)
    assert "metrics.jsonl has epoch rows [" in (run.problem() or "") and run.status == "incomplete"


def test_epoch_rows_in_order_are_trusted(tmp_path):
    run = completed(tmp_path, [1, 2, 3])
    assert run.problem() is None and run.status == "done"


def test_derived_time_limit(tmp_path):
    spec = spec_for(tmp_path, "mwn", limit=None, epochs=3)
    assert time_limit(spec) == 3 * 7200                     # no ERM trial measured: 2 h per epoch
    erm = RunDir(tmp_path / "trials" / "erm")
    spec["erm_dir"] = str(erm.path)
    for wall, limit in ((100.0, 2000.0), (5.0, 600.0)):     # 20 x the ERM trial's wall time, at least 10 min
        erm.start({"trial_id": "erm", "config": {}})
        erm.append_metrics({"epoch": 1})
        erm.save_margins({"test_ids": np.arange(2)})
        erm.finish({"trial_id": "erm", "wall_time_s": wall})
        assert time_limit(spec) == limit
    assert time_limit({**spec, "time_limit_s": 30}) == 30   # the sweep's own limit wins
