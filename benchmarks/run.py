"""Run a sweep: `python -m benchmarks.run sweeps/NAME.yaml [--set k=v ...] [--only method=a,b ...] [--dry-run]`.

The sweep is validated completely before anything starts (bad input: one line, exit 2). Trials whose
run directory is done (or diverged: a finished outcome) are skipped, so re-running the command after an
interruption redoes only the unfinished ones. Exit 0 when every trial finished (done or diverged), 1 when
any failed.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import time

from typing import TYPE_CHECKING

import yaml

from molere.config import ConfigError

from benchmarks.trial.store import FINISHED, RunDir, atomic_write as _atomic_write, write_json
from benchmarks.sweep.worker import LOG_FILE

from .cli import Parser

if TYPE_CHECKING:
    from benchmarks.sweep.schema import Sweep
# torch, the registries and W&B are imported where used, after the arguments are parsed (a fast --help)

PROG = "benchmarks.run"


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="sweep file, e.g. sweeps/quickstart.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field before validation (YAML value), e.g. train.epochs=2, "
                        "datasets.fashion_mnist.options.train_subset=null; repeatable")
    p.add_argument("--only", nargs="+", default=[], metavar="KEY=V1,V2",
                   help="run a subset: method=..., dataset=..., regime=..., seed=... (ERM partners are kept)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost estimate, and exit "
                                                          "(starts nothing)")
    p.add_argument("--cost-perf", default=None, metavar="PERF_JSON",
                   help="--dry-run: take ERM throughput and method costs from this benchmarks.perf JSON of the GPU "
                        "the sweep will use (e.g. gpu_check/perf.json) instead of the reference figures")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else local Ray)")
    p.add_argument("--results", default=None, help="results directory (overrides results_dir)")
    return p.parse_args(argv)


def _hp_text(method: str, hp: dict, width: int = 48) -> str:
    """The hyperparameters that differ from the method's defaults."""
    from . import catalog
    defaults = catalog.METHODS.get(method).Hparams().model_dump(mode="json")
    text = json.dumps({k: v for k, v in hp.items() if k not in defaults or defaults[k] != v}, separators=(",", ":"),
                      sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


def search_lines(trials) -> list[str]:
    """One line per dataset x method: its search space (hyperparameters and train.<field>) and its draws."""
    seen: dict[tuple, tuple[dict, set]] = {}
    for t in trials:
        if not t.reference_only:
            key = (t.labels["dataset"], t.labels["method"])
            seen.setdefault(key, (t.search_space, set()))[1].add(t.labels["hparams_id"])
    out = []
    for (dataset, method), (space, draws) in seen.items():
        text = ", ".join(f"{k} ~ {json.dumps(v, separators=(',', ':'))}" for k, v in space.items()) or "none"
        out.append(f"search space ({dataset}, {method}): {text} ({len(draws)} draw{'s' * (len(draws) != 1)})")
    return out


def print_plan(trials, status: dict[str, str], out=None, sizes: bool = False,
               estimates: dict[str, str] | None = None) -> None:
    out = out or sys.stdout
    estimates = estimates or {}
    if sizes:
        from benchmarks.sweep.realised_sizes import size_lines
        for line in size_lines(trials):
            print(line, file=out)
    for line in search_lines(trials):
        print(line, file=out)
    rows = [(t.trial_id, t.labels["dataset"], t.labels["regime"], t.labels["method"], str(t.labels["seed"]),
             _hp_text(t.labels["method"], {**t.config.method.hparams,
                                           **{f"train.{k}": v for k, v in t.searched.items()}}),
             status[t.trial_id] + (" (reference)" if t.reference_only else ""), estimates.get(t.trial_id, ""))
            for t in trials]
    head = ("trial", "dataset", "regime", "method", "seed", "hparams (non-default, train.* drawn)", "status", "est.")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def counts(status: dict[str, str]) -> str:
    n = {s: sum(v == s for v in status.values()) for s in ("done", "diverged", "failed", "incomplete", "absent")}
    return (f"{len(status)} trials: {n['done']} done, " + (f"{n['diverged']} diverged, " if n["diverged"] else "")
            + f"{n['failed']} failed, {n['incomplete']} incomplete, {n['absent']} not started")


def wandb_settings(sweep: Sweep) -> dict:
    from benchmarks.wandb_io.log import git_commit, resolve_mode
    w = sweep.wandb
    return {"project": w.project, "entity": w.entity, "mode": resolve_mode(w.mode),
            "dir": str(sweep.directory.resolve() if w.dir is None else w.dir),
            "log_every_steps": w.log_every_steps, "stats_interval_s": w.stats_interval_s,
            "flush_interval_s": w.flush_interval_s, "git": git_commit()}


def write_plan(sweep: Sweep, trials, filtered: bool = False) -> list[str]:
    """Add `trials` to the store's plan (never removes one: benchmarks.sweep.stored); sweep.yaml is
    written by an unfiltered run (or when absent). Returns notes; a filtered run that would change planned
    trials raises ConfigError."""
    from benchmarks.sweep.stored import merge_plan, plan_so_far
    d = sweep.directory
    plan, notes = merge_plan(plan_so_far(d), [t.record() for t in trials], filtered=filtered, where=str(d))
    (d / "trials").mkdir(parents=True, exist_ok=True)
    write_json(d / "plan.json", plan)
    if not filtered or not (d / "sweep.yaml").exists():
        _atomic_write(d / "sweep.yaml", yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False).encode())
    return notes


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


def writable_results(sweep: Sweep) -> None:
    """The sweep's folder can be created and written (else one line naming results_dir)."""
    d = sweep.directory
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"results_dir: cannot write {d} ({exc.strerror or type(exc).__name__}); "
                          "choose a writable folder with --results") from None


def lock_results(sweep: Sweep):
    """Hold an advisory lock on the sweep's folder for this process's lifetime (one sweep at a time)."""
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


def check_resources(sweep: Sweep, have: dict[str, float], where: str) -> None:
    """One line when a trial asks for more CPUs/GPUs than `have` (the machine or the cluster) offers."""
    asked = {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu}
    short = [k for k, v in asked.items() if v > have.get(k, 0)]
    if short:
        ask = ", ".join(f"{k}={asked[k]:g}" for k in asked)
        got = ", ".join(f"{have.get(k, 0):g} {k.upper()}s" for k in asked)
        raise ConfigError(f"resources: each trial asks for {ask} but {where} has {got}; lower resources."
                          f"{short[0]} (--set resources.{short[0]}=...) or use a machine that has them")


def check_address(address: str) -> None:
    """The Ray cluster at `address` answers (else one line, before anything is written)."""
    from benchmarks.sweep.scheduler import reachable
    try:
        reachable(address)
    except ConnectionError as exc:
        raise ConfigError(f"--address: cannot reach the Ray cluster at {address} ({str(exc).splitlines()[0]}); "
                          "check --address / RAY_ADDRESS (host:port of a running Ray head)") from None


def local_resources() -> dict[str, float]:
    import torch
    return {"cpu": float(os.cpu_count() or 1), "gpu": float(torch.cuda.device_count())}


def untrusted(trials, directory) -> dict[str, str]:
    """{trial id: why} for completed trials whose outputs do not check out (they are rerun)."""
    out = {}
    for t in trials:
        why = RunDir(directory / "trials" / t.trial_id).problem()
        if why:
            out[t.trial_id] = why
    return out


def report(sweep: Sweep, settings: dict) -> None:
    """Build the sweep report when the report module exists; a report failure never loses results."""
    try:
        from .report import build_report
    except (ImportError, AttributeError):
        return
    try:
        built = build_report(sweep.directory, wandb_settings=settings)
    except Exception as exc:  # noqa: BLE001
        print(f"{PROG}: warning: the report failed ({type(exc).__name__}: {exc}); results are intact",
              file=sys.stderr)
        return
    if built.get("summary") is not None:
        from .report.summary import plain_text
        print(f"\n{built['summary'].title}\n{plain_text(built['summary'])}\n{built['summary'].legend}")
    print(f"report: {built['index']}")


def dashboard(sweep: Sweep, settings: dict) -> None:
    """Build the sweep's W&B workspace and report (online: saved; offline: written as a specification)."""
    if settings["mode"] == "disabled" or not sweep.wandb.dashboard:
        return
    try:
        from benchmarks.wandb_io.dashboard import build_dashboard
        out = build_dashboard(sweep.directory, settings)
        for line in out["messages"]:
            print(line)
    except Exception as exc:  # noqa: BLE001
        print(f"{PROG}: warning: the W&B dashboard failed ({type(exc).__name__}: {exc}); results are intact",
              file=sys.stderr)


def check_wandb() -> None:
    from benchmarks.wandb_io.log import check_wandb as check
    check()


def main(argv=None) -> int:
    a = parse_args(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    from benchmarks.data.datasets.common import DataMissingError
    from benchmarks.sweep import references
    from benchmarks.sweep.host import check_host
    from benchmarks.sweep.per_dataset import models_of
    from benchmarks.cli import parse_only
    from benchmarks.sweep.plan import expand_trials, select
    from benchmarks.sweep.schema import load_sweep, missing_data
    from benchmarks.wandb_io.log import resolve_mode
    from .cli import bad_input_exits
    from .pretrained import check_pretrained
    with bad_input_exits(PROG):
        sweep = load_sweep(a.sweep, a.set, a.results)
        only = parse_only(a.only)
        plan = expand_trials(sweep)
        chosen = select(plan, only)
        if resolve_mode(sweep.wandb.mode) != "disabled":
            try:
                check_wandb()
            except ValueError as exc:
                raise ConfigError(f"wandb.mode: {exc}") from None
        missing = missing_data(sweep, {t.labels["dataset"] for t in chosen})
        if missing and not a.dry_run:
            raise DataMissingError(f"{a.sweep}: {missing[0]}")
        for model in models_of(sweep):   # once here, not in every trial
            try:
                check_pretrained(model, download=not a.dry_run)
            except ConfigError as exc:
                if not a.dry_run:
                    raise ConfigError(f"{a.sweep}: {exc}") from None
                missing.append(str(exc))
    status = {t.trial_id: RunDir(sweep.directory / "trials" / t.trial_id).status for t in chosen}
    if a.dry_run:
        with bad_input_exits(PROG):
            if a.cost_perf and not os.path.isfile(a.cost_perf):
                raise ConfigError(f"--cost-perf: {a.cost_perf} not found; give a benchmarks.perf --json file")
            from benchmarks.sweep.cost import estimate
            estimates, lines = estimate(chosen, sweep, status, a.cost_perf)
        print_plan(chosen, status, sizes=True, estimates=estimates)
        print("\n".join(lines))
        for m in missing:
            print(f"warning: {m}", file=sys.stderr)
        print(f"{sweep.name}: {counts(status)}; would run {sum(s not in FINISHED for s in status.values())}"
              + references.dry_run_note(chosen, sweep.directory))
        return 0
    with bad_input_exits(PROG):
        if a.address or os.environ.get("RAY_ADDRESS"):
            check_address(a.address or os.environ["RAY_ADDRESS"])
        else:
            have = local_resources()
            check_resources(sweep, have, "this machine")
            check_host(chosen, sweep.resources.cpu, sweep.resources.gpu, have)   # /dev/shm, loader memory
        writable_results(sweep)
        lock = lock_results(sweep)              # noqa: F841 - held until the process ends
    shutil.rmtree(sweep.directory / ".ray", ignore_errors=True)   # a killed run's Ray state is not the record
    status = {t.trial_id: RunDir(sweep.directory / "trials" / t.trial_id).status for t in chosen}
    for tid, why in untrusted(chosen, sweep.directory).items():
        print(f"{sweep.name}: not trusting trial {tid}: {why}; rerunning it", file=sys.stderr)
    with bad_input_exits(PROG):
        for note in write_plan(sweep, chosen, filtered=bool(a.set or a.only)):
            print(f"{sweep.name}: {note}", file=sys.stderr)
    settings = wandb_settings(sweep)
    todo = [t for t in chosen if status[t.trial_id] not in FINISHED]
    jobs = references.pending_jobs(chosen, sweep.directory)   # out-of-fold models the planned methods need
    # done trials whose reference is rerun now wait for it; they run again only if its margins change
    recheck = references.done_but_rerun_reference(chosen, status, todo, jobs)
    t0 = time.monotonic()
    lost: dict[str, str] = {}
    if todo or jobs:
        print(f"{sweep.name}: running {len(todo)} of {len(chosen)} trials "
              f"({len(chosen) - len(todo)} already done){references.running_note(jobs)}; W&B {settings['mode']}",
              file=sys.stderr)
        from benchmarks.sweep.scheduler import run_trials
        ordered, waits = references.order(todo + recheck, jobs)
        specs = references.specs(ordered, sweep, settings)
        asked = {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu}
        try:
            with bad_input_exits(PROG):
                lost = run_trials(specs, waits, resources=asked, storage=str((sweep.directory / ".ray").resolve()),
                                  address=a.address,
                                  check_cluster=lambda have: check_resources(sweep, have, "the Ray cluster"),
                                  skip_if_done=lambda spec: RunDir(spec["out_dir"]).status in FINISHED)
        except ConnectionError as exc:
            print(f"{PROG}: error: cannot reach the Ray cluster ({a.address or os.environ.get('RAY_ADDRESS')}): "
                  f"{str(exc).splitlines()[0]}; check --address / RAY_ADDRESS", file=sys.stderr)
            return 2
    for tid, error in lost.items():             # Ray lost the worker itself: the store records it
        run = references.run_dir(tid, jobs, sweep.directory)
        if run.status not in (*FINISHED, "failed"):
            run.fail_with(f"WorkerLost: {error}", cause="worker died")
    code = summarize(sweep, chosen, lost, time.monotonic() - t0)
    references.report_unfinished(jobs, sweep.directory)
    report(sweep, settings)
    dashboard(sweep, settings)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
