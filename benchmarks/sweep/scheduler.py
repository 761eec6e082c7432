"""Run planned trials as Ray Tune trials (the only module that imports Ray).

Ray only schedules: what is done is decided by the result store, never by Ray's experiment state.
Trials that wait for others (the reference runs of their key, `benchmarks.sweep.references`) are handed
out by a small searcher once those have finished, so references run first and once per key while the
other trials fill free slots.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import time

import ray
from ray import tune
from ray.tune.search import Searcher

from molere.config import ConfigError

from benchmarks.sweep import daemon_reaper

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_AIR_NEW_OUTPUT": "0", "WANDB_SILENT": "true"}   # silent Ray; our own progress line
FORWARD = ("WANDB_", "HF_", "TORCH_HOME", "OMP_NUM_THREADS")
LOCAL_ONLY = ("WANDB_SERVICE",)   # the address of this process's wandb-core: a worker must start its own
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")   # never in Ray's runtime env (Ray logs it)


def is_secret(name: str) -> bool:
    return any(w in name.upper() for w in SECRET_WORDS)


def worker_secrets() -> dict[str, str]:
    """Credentials for the workers; they travel through Ray's object store, never its runtime env."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARD) and is_secret(k)}


def worker_env() -> dict[str, str]:
    """The environment every worker gets (local or on a cluster): Ray settings, W&B/HF settings, paths."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    env = {k: v for k, v in os.environ.items()
           if k in RAY_ENV or (k.startswith(FORWARD) and not is_secret(k) and k not in LOCAL_ONLY)}
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p] + [os.getcwd()]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    env["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    return env


def reachable(address: str) -> None:
    """Fail fast (ConnectionError) when a host:port address does not answer; Ray would retry for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return   # "auto", "local", ...: left to Ray
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except (OSError, OverflowError, ValueError) as exc:   # refused, unknown host, timeout, port out of range
        raise ConnectionError(str(exc) or type(exc).__name__) from None


def check_address(address: str) -> None:
    """The Ray cluster at `address` answers (else one line of bad input, before anything is written)."""
    try:
        reachable(address)
    except ConnectionError as exc:
        raise ConfigError(f"--address: cannot reach the Ray cluster at {address} ({str(exc).splitlines()[0]}); "
                          "check --address / RAY_ADDRESS (host:port of a running Ray head)") from None


def start_ray(address: str | None) -> None:
    env = worker_env()
    common = dict(log_to_driver=False, logging_level=logging.WARNING, runtime_env={"env_vars": env})
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        reachable(address)
        ray.init(address=address, **common)
    else:
        daemon_reaper.start()      # what this driver starts here dies with it, however it ends
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1", **common)


def _cluster_resources(wait_s: float = 10.0) -> dict:
    """The cluster's total resources (nodes register shortly after `ray.init`, so wait a little)."""
    deadline = time.monotonic() + wait_s
    have = ray.cluster_resources()
    while not have.get("CPU") and time.monotonic() < deadline:
        time.sleep(0.5)
        have = ray.cluster_resources()
    return {"cpu": have.get("CPU", 0), "gpu": have.get("GPU", 0)}


def _trainable(config: dict, secrets: dict | None = None) -> None:
    from benchmarks.sweep.worker import run_one
    ctx = ray.get_runtime_context()
    tune.report(run_one(config["spec"], {"node_id": ctx.get_node_id()}, secrets))


class _Queue(Searcher):
    """Hands out the trials in order; one waiting for others of this run goes once they are all over."""

    def __init__(self, specs: list[dict], waits_on: dict[str, list[str]], skip_if_done=None):
        super().__init__()
        self.pending, self.waits_on, self.skip_if_done = list(specs), waits_on, skip_if_done
        self.finished: set[str] = set()
        self.ours: dict[str, str] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        for spec in list(self.pending):
            deps = self.waits_on.get(spec["trial_id"]) or ()
            ready = all(d in self.finished for d in deps)
            if deps and ready and self.skip_if_done and self.skip_if_done(spec):
                self.pending.remove(spec)       # its rerun reference gave the same margins: still done
                continue
            if ready:
                self.pending.remove(spec)
                self.ours[trial_id] = spec["trial_id"]
                return {"spec": spec}
        return Searcher.FINISHED if not self.pending else None

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self.finished.add(self.ours.get(trial_id, ""))

    def save(self, checkpoint_path: str) -> None:
        pass   # the result store, not Ray's experiment state, says what is done

    def restore(self, checkpoint_path: str) -> None:
        pass


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress(tune.Callback):
    """A live line on stderr: trials pending / running / done / failed, elapsed time and ETA."""

    def __init__(self, total: int, stream=None):
        self.total, self.stream = total, stream or sys.stderr
        self.running: set[str] = set()
        self.done = self.failed = 0
        self.t0, self.shown, self.last = time.monotonic(), 0.0, ""
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.status: dict[str, str] = {}

    def line(self) -> str:
        finished = self.done + self.failed
        elapsed = time.monotonic() - self.t0
        pending = self.total - finished - len(self.running)
        eta = _clock(elapsed / finished * (self.total - finished)) if finished else "?"
        return (f"[sweep] {pending} pending · {len(self.running)} running · {self.done} done · "
                f"{self.failed} failed · {_clock(elapsed)} elapsed · ETA {eta}")

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        line = self.line()
        if self.tty and (force or now - self.shown >= 1.0):
            self.stream.write("\r" + line + "\x1b[K")
        elif not self.tty and force and line.split(" · ")[:4] != self.last.split(" · ")[:4]:
            self.stream.write(line + "\n")
        else:
            return
        self.stream.flush()
        self.shown, self.last = now, line

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self.show(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.status[trial.trial_id] = result.get("status", "failed")

    def _over(self, trial, ok: bool) -> None:
        self.running.discard(trial.trial_id)
        if ok and self.status.get(trial.trial_id) in ("done", "diverged"):   # finished (the summary tells them apart)
            self.done += 1
        else:
            self.failed += 1
        self.show(force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._over(trial, ok=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._over(trial, ok=False)

    def on_step_end(self, iteration, trials, **info):
        self.show()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_trials(specs: list[dict], waits_on: dict[str, list[str]], *, resources: dict, storage: str,
               address: str | None = None, check_cluster=None, skip_if_done=None) -> dict[str, str]:
    """Run every spec as a Ray Tune trial; returns {trial id: error} for trials Ray itself lost.

    `check_cluster(resources)` may reject the cluster before any trial starts (it raises);
    `skip_if_done(spec)` is asked, once what it waits for is over, whether a waiting trial still needs to run.
    """
    secrets = worker_secrets()
    start_ray(address)
    progress = Progress(len(specs))
    try:
        if check_cluster is not None and (address or os.environ.get("RAY_ADDRESS")):
            check_cluster(_cluster_resources())
        trainable = tune.with_parameters(_trainable, secrets=secrets)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {k: v for k, v in resources.items() if v}),
            tune_config=tune.TuneConfig(search_alg=_Queue(specs, waits_on, skip_if_done), num_samples=len(specs),
                                        reuse_actors=True,
                                        trial_name_creator=lambda t: t.config["spec"]["trial_id"],
                                        trial_dirname_creator=lambda t: t.config["spec"]["trial_id"]),
            run_config=tune.RunConfig(name="tune", storage_path=storage, verbose=0, callbacks=[progress],
                                      failure_config=tune.FailureConfig(max_failures=0)))
        grid = tuner.fit()
        lost = {}
        for r in grid:
            if r.error is not None:
                lost[r.config["spec"]["trial_id"]] = f"{type(r.error).__name__}: {r.error}".splitlines()[0]
        return lost
    finally:
        progress.close()
        ray.shutdown()
        shutil.rmtree(os.path.join(storage, "tune"), ignore_errors=True)   # Ray's state is not the record
        try:
            os.rmdir(storage)
        except OSError:
            pass
