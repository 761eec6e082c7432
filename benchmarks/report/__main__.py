"""`python -m benchmarks.report SWEEP_DIR [--out DIR] [--only KEY=V1,V2 ...] [--readme README.md]
[--wandb-mode offline|online|disabled]`: the report of a store (or of the subset asked); prints the summary
table and the report's path."""
from __future__ import annotations

from pathlib import Path

from benchmarks.cli import Parser, bad_input_exits, fail, writable_dir
from benchmarks.sweep.stored import read_plan, read_settings

from . import build_report

PROG = "benchmarks.report"
ONLY_KEYS = ("method", "dataset", "regime", "seed")


def parse_args(argv=None):
    import argparse
    p = Parser(prog=PROG, description=__doc__.split(":", 1)[1].strip(),
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


def main(argv=None) -> int:
    a = parse_args(argv)
    with bad_input_exits(PROG):   # every check before any work: one line, exit 2
        plan = read_plan(a.sweep_dir)
        read_settings(a.sweep_dir)
        from benchmarks.cli import parse_only

        from .collect import subset
        only = parse_only(a.only)
        if only:
            subset(plan, only)    # unknown values: one line, nothing written
        from .readme import check_readme, write_readme
        if a.readme:
            check_readme(a.readme)     # the markers
        from . import default_out
        writable_dir(a.out or default_out(Path(a.sweep_dir), only or None), "--out")
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
            with bad_input_exits(PROG):
                write_readme(a.readme, summary_block(r["summary"], a.sweep_dir, r["counts"]))
            print(f"summary written to {a.readme}")
    elif a.readme:
        fail(PROG, f"--readme: {a.sweep_dir} has no summary yet (no method with a finished reference)")
    print(f"report: {r['index']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
