"""`python -m benchmarks.report SWEEP_DIR [--out DIR] [--only KEY=V1,V2 ...] [--readme README.md]
[--wandb-mode offline|online|disabled]`: the report of a store (or of the subset asked); prints the summary
table and the report's path."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import build_report

PROG = "benchmarks.report"
ONLY_KEYS = ("method", "dataset", "regime", "seed")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split(":", 1)[1].strip(),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("sweep_dir", help="the sweep's directory in the result store (holds plan.json and trials/)")
    p.add_argument("--out", default=None, help="output folder (default: SWEEP_DIR/report, or SWEEP_DIR/report-<filter> "
                                               "with --only)")
    p.add_argument("--only", nargs="+", default=[], metavar="KEY=V1,V2",
                   help=f"render a subset: {', '.join(ONLY_KEYS)} (the reference method is kept)")
    p.add_argument("--readme", default=None, metavar="FILE",
                   help="also write the summary table between the report-summary markers of FILE (e.g. README.md)")
    p.add_argument("--wandb-mode", choices=("offline", "online", "disabled"), default=None,
                   help="also log the W&B summary run (default: no W&B)")
    p.add_argument("--wandb-project", default="molere-bench", help="W&B project of the summary run")
    p.add_argument("--select-epoch", choices=("last", "best"), default="last",
                   help="model selection on each trial's last epoch or its best epoch by selection accuracy "
                        "(early stopping on the selection split)")
    return p.parse_args(argv)


def parse_only(items: list[str]) -> dict[str, set[str]]:
    only: dict[str, set[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or key not in ONLY_KEYS or not values:
            raise ValueError(f"--only: expected KEY=V1,V2 with KEY one of {', '.join(ONLY_KEYS)} (got {item!r})")
        only.setdefault(key, set()).update(v for v in values.split(",") if v)
    return only


def _error(text: str) -> int:
    print(f"{PROG}: error: {' '.join(text.split())}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    a = parse_args(argv)
    plan = Path(a.sweep_dir) / "plan.json"
    if not plan.exists():
        return _error(f"{a.sweep_dir}: no plan.json (expected a sweep directory of the result store)")
    try:
        json.loads(plan.read_text())
    except (OSError, ValueError) as exc:
        return _error(f"{a.sweep_dir}/plan.json: unreadable ({type(exc).__name__}: {str(exc)[:120]}); rerun the "
                      "sweep to rewrite it")
    try:
        only = parse_only(a.only)
        from .collect import load_plan, subset
        subset(load_plan(Path(a.sweep_dir)), only) if only else None    # unknown values: one line, nothing written
    except ValueError as exc:
        return _error(str(exc))
    from molere.config import ConfigError

    from .readme import check_readme, write_readme
    try:
        if a.readme:
            check_readme(a.readme)     # the markers, before any work
    except ConfigError as exc:
        return _error(str(exc))
    wb = None if a.wandb_mode is None else {"mode": a.wandb_mode, "project": a.wandb_project}
    r = build_report(a.sweep_dir, a.out, wb, selection_epoch=a.select_epoch, only=only or None)
    for n in r["notes"][1:]:
        print(f"note: {n}")
    print(f"trials: {', '.join(f'{v} {k}' for k, v in r['counts'].items())}")
    if r["summary"] is not None:
        from .readme import summary_block
        from .summary import plain_text
        print(f"\n{r['summary'].title}\n{plain_text(r['summary'])}\n{r['summary'].legend}\n")
        if a.readme:
            try:
                write_readme(a.readme, summary_block(r["summary"], a.sweep_dir, r["counts"]))
            except ConfigError as exc:
                return _error(str(exc))
            print(f"summary written to {a.readme}")
    elif a.readme:
        return _error(f"--readme: {a.sweep_dir} has no summary yet (no method with a finished reference)")
    print(f"report: {r['index']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
