"""Run a sweep: `python -m benchmarks.run sweeps/NAME.yaml [--set k=v ...] [--only method=a,b ...] [--dry-run]`.

The sweep is validated completely before anything starts (bad input: one line, exit 2). Trials whose
run directory is done (or diverged: a finished outcome) are skipped, so re-running the command after an
interruption redoes only the unfinished ones. Exit 0 when every trial finished (done or diverged), 1 when
any failed.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from molere.config import ConfigError

from .cli import Parser

if TYPE_CHECKING:
    from benchmarks.sweep.schema import Sweep
# torch, the registries and W&B are imported where used, after the arguments are parsed (a fast --help);
# the run itself (lock, plan, Ray, summary, report, dashboard) is benchmarks.orchestrate

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


def check_wandb() -> None:
    from benchmarks.wandb_io.log import check_wandb as check
    check()


def validate(a: argparse.Namespace) -> tuple[Sweep, list, list[str]]:
    """Load and check the sweep before anything starts (bad input: one line, exit 2); returns (sweep, the
    selected trials, what is missing: warnings for --dry-run)."""
    from benchmarks.data.datasets.common import DataMissingError
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
    return sweep, chosen, missing


def dry_run(a: argparse.Namespace, sweep: Sweep, chosen: list, missing: list[str]) -> int:
    """Print the plan, its cost estimate and what would run; starts nothing."""
    from benchmarks.sweep import references
    from benchmarks.sweep.show import counts, print_plan
    from benchmarks.trial.store import FINISHED, RunDir
    from .cli import bad_input_exits
    status = {t.trial_id: RunDir(sweep.directory / "trials" / t.trial_id).status for t in chosen}
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


def check_machine(a: argparse.Namespace, sweep: Sweep, chosen: list) -> None:
    """The Ray cluster answers, or this machine has the resources, /dev/shm and memory the trials ask for
    (bad input: one line, exit 2)."""
    from benchmarks.sweep import host
    from .cli import bad_input_exits
    with bad_input_exits(PROG):
        if a.address or os.environ.get("RAY_ADDRESS"):
            from benchmarks.sweep.scheduler import check_address
            check_address(a.address or os.environ["RAY_ADDRESS"])
        else:
            have = host.local_resources()
            host.check_resources(sweep, have, "this machine")
            host.check_host(chosen, sweep.resources.cpu, sweep.resources.gpu, have)   # /dev/shm, loader memory


def main(argv=None) -> int:
    a = parse_args(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    sweep, chosen, missing = validate(a)
    if a.dry_run:
        return dry_run(a, sweep, chosen, missing)
    check_machine(a, sweep, chosen)
    from benchmarks.orchestrate import run_sweep
    return run_sweep(sweep, chosen, filtered=bool(a.set or a.only), address=a.address, prog=PROG)


if __name__ == "__main__":
    raise SystemExit(main())
