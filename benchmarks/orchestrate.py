"""Run a validated sweep: what `python -m benchmarks.run` does once its checks pass.

    run_sweep(sweep, trials, filtered=..., address=..., prog=...) -> exit code

The results folder is locked for the run (one sweep at a time), a killed run's Ray state is cleared, the
store's plan grows by the selected trials, the unfinished trials run on Ray after the out-of-fold ERM models
they wait on, workers Ray lost are recorded in the store, and at the end come the summary, the report and the
W&B dashboard. Exit 0 when every trial finished (done or diverged), 1 when any failed, 2 when the Ray cluster
cannot be reached. torch, Ray, pandas and W&B are imported where used (importing this module stays cheap).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
import time
from typing import TYPE_CHECKING

from molere.config import ConfigError

from benchmarks.cli import bad_input_exits, writable_dir
from benchmarks.sweep.show import counts
from benchmarks.sweep.worker import LOG_FILE
from benchmarks.trial.store import FINISHED, RunDir

if TYPE_CHECKING:
    from benchmarks.sweep.schema import Sweep


def lock_results(sweep: Sweep):
    """An advisory lock on the sweep's folder (one sweep at a time), held until the returned file is closed."""
    f = open(sweep.directory / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise ConfigError(f"{sweep.directory} is in use by another sweep ({holder[:80]}); wait for it to "
                          "finish or give another --results folder") from None
    f.truncate(0)
    f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    return f


def untrusted(trials, directory) -> dict[str, str]:
    """{trial id: why} for completed trials whose outputs do not check out (they are rerun)."""
    out = {}
    for t in trials:
        why = RunDir(directory / "trials" / t.trial_id).problem()
        if why:
            out[t.trial_id] = why
    return out


def summarize(sweep: Sweep, trials, lost: dict[str, str], elapsed: float) -> int:
    """Print the end-of-sweep summary from the store; returns the exit code."""
    status = {t.trial_id: RunDir(sweep.directory / "trials" / t.trial_id).status for t in trials}
    print(f"{sweep.name}: {counts(status)} ({elapsed:.0f} s); results in {sweep.directory}")
    for t in trials:
        if status[t.trial_id] == "diverged":
            res, lab = RunDir(sweep.directory / "trials" / t.trial_id).result(), t.labels
            print(f"  DIVERGED {t.trial_id} {lab['dataset']}/{lab['regime']}/{lab['method']}/seed {lab['seed']} at "
                  f"epoch {res.get('diverged_epoch')}: {res.get('diverged_reason')}")
    bad = [t for t in trials if status[t.trial_id] not in FINISHED]
    unfinished = 0
    for t in bad:
        run = RunDir(sweep.directory / "trials" / t.trial_id)
        if run.status == "failed":
            reason = run.failure().get("error") or "?"
        elif t.trial_id in lost:
            reason = lost[t.trial_id]
        else:
            unfinished += 1
            continue
        lab = t.labels
        log = run.file(LOG_FILE)
        print(f"  FAILED {t.trial_id} {lab['dataset']}/{lab['regime']}/{lab['method']}/seed {lab['seed']}: "
              f"{reason.splitlines()[0]}" + (f"\n    log: {log}" if log.exists() else " (no log file)"))
    if unfinished:
        print(f"  {unfinished} trials did not finish (interrupted?); run the same command again to continue")
    return 1 if bad else 0


def report(sweep: Sweep, settings: dict, prog: str) -> None:
    """Build the sweep report when the report module exists; a report failure never loses results."""
    try:
        from benchmarks.report import build_report
    except (ImportError, AttributeError):
        return
    try:
        built = build_report(sweep.directory, wandb_settings=settings)
    except Exception as exc:  # noqa: BLE001
        print(f"{prog}: warning: the report failed ({type(exc).__name__}: {exc}); results are intact",
              file=sys.stderr)
        return
    if built.get("summary") is not None:
        from benchmarks.report.summary import plain_text
        print(f"\n{built['summary'].title}\n{plain_text(built['summary'])}\n{built['summary'].legend}")
    print(f"report: {built['index']}")


def dashboard(sweep: Sweep, settings: dict, prog: str) -> None:
    """Build the sweep's W&B workspace and report (online: saved; offline: written as a specification)."""
    if settings["mode"] == "disabled" or not sweep.wandb.dashboard:
        return
    try:
        from benchmarks.wandb_io.dashboard import build_dashboard
        out = build_dashboard(sweep.directory, settings)
        for line in out["messages"]:
            print(line)
    except Exception as exc:  # noqa: BLE001
        print(f"{prog}: warning: the W&B dashboard failed ({type(exc).__name__}: {exc}); results are intact",
              file=sys.stderr)


class SweepRun:
    """One run of `trials` (the selected trials of a validated sweep, its results folder locked): prepare,
    schedule, record_lost, finish."""

    def __init__(self, sweep: Sweep, trials: list, *, filtered: bool, address: str | None, prog: str):
        self.sweep, self.trials, self.filtered, self.address, self.prog = sweep, trials, filtered, address, prog
        self.settings: dict = {}
        self.todo: list = []
        self.jobs: list = []
        self.recheck: list = []
        self.lost: dict[str, str] = {}

    def prepare(self) -> None:
        """Clear a killed run's Ray state, note untrusted trials, grow the plan, find what is left to run."""
        from benchmarks.sweep import references
        from benchmarks.sweep.stored import write_plan
        from benchmarks.wandb_io.log import wandb_settings
        sweep, trials = self.sweep, self.trials
        shutil.rmtree(sweep.directory / ".ray", ignore_errors=True)   # a killed run's Ray state is not the record
        status = {t.trial_id: RunDir(sweep.directory / "trials" / t.trial_id).status for t in trials}
        for tid, why in untrusted(trials, sweep.directory).items():
            print(f"{sweep.name}: not trusting trial {tid}: {why}; rerunning it", file=sys.stderr)
        with bad_input_exits(self.prog):
            for note in write_plan(sweep, trials, filtered=self.filtered):
                print(f"{sweep.name}: {note}", file=sys.stderr)
        self.settings = wandb_settings(sweep)
        self.todo = [t for t in trials if status[t.trial_id] not in FINISHED]
        self.jobs = references.pending_jobs(trials, sweep.directory)   # out-of-fold models the planned methods need
        # done trials whose reference is rerun now wait for it; they run again only if its margins change
        self.recheck = references.done_but_rerun_reference(trials, status, self.todo, self.jobs)

    def schedule(self) -> int | None:
        """Run the unfinished trials and reference jobs on Ray, references first; self.lost = {id: error} of
        the workers Ray lost. Returns 2 when the Ray cluster cannot be reached (one line), else None."""
        from benchmarks.sweep import references
        sweep, todo, jobs = self.sweep, self.todo, self.jobs
        if not (todo or jobs):
            return None
        print(f"{sweep.name}: running {len(todo)} of {len(self.trials)} trials "
              f"({len(self.trials) - len(todo)} already done){references.running_note(jobs)}; "
              f"W&B {self.settings['mode']}", file=sys.stderr)
        from benchmarks.sweep.host import check_resources
        from benchmarks.sweep.scheduler import run_trials
        ordered, waits = references.order(todo + self.recheck, jobs)
        specs = references.specs(ordered, sweep, self.settings)
        asked = {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu}
        try:
            with bad_input_exits(self.prog):
                self.lost = run_trials(specs, waits, resources=asked,
                                       storage=str((sweep.directory / ".ray").resolve()), address=self.address,
                                       check_cluster=lambda have: check_resources(sweep, have, "the Ray cluster"),
                                       skip_if_done=lambda spec: RunDir(spec["out_dir"]).status in FINISHED)
        except ConnectionError as exc:
            print(f"{self.prog}: error: cannot reach the Ray cluster "
                  f"({self.address or os.environ.get('RAY_ADDRESS')}): {str(exc).splitlines()[0]}; "
                  "check --address / RAY_ADDRESS", file=sys.stderr)
            return 2
        return None

    def record_lost(self) -> None:
        """Ray lost the worker itself: the store records the failure (unless the trial's folder says more)."""
        from benchmarks.sweep import references
        for tid, error in self.lost.items():
            run = references.run_dir(tid, self.jobs, self.sweep.directory)
            if run.status not in (*FINISHED, "failed"):
                run.fail_with(f"WorkerLost: {error}", cause="worker died")

    def finish(self, elapsed: float) -> int:
        """The summary (returns the exit code), unfinished reference jobs, the report and the W&B dashboard."""
        from benchmarks.sweep import references
        code = summarize(self.sweep, self.trials, self.lost, elapsed)
        references.report_unfinished(self.jobs, self.sweep.directory)
        report(self.sweep, self.settings, self.prog)
        dashboard(self.sweep, self.settings, self.prog)
        return code

    def run(self) -> int:
        self.prepare()
        t0 = time.monotonic()
        code = self.schedule()
        if code is not None:
            return code
        self.record_lost()
        return self.finish(time.monotonic() - t0)


def run_sweep(sweep: Sweep, trials: list, *, filtered: bool, address: str | None, prog: str) -> int:
    """Lock the sweep's results folder (bad input: one line, exit 2) and run `trials`; returns the exit code."""
    with bad_input_exits(prog):
        writable_dir(sweep.directory, "results_dir", "choose a writable folder with --results")
        lock = lock_results(sweep)
    with lock:                                  # held until the sweep is over
        return SweepRun(sweep, trials, filtered=filtered, address=address, prog=prog).run()
