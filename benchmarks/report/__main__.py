"""`python -m benchmarks.report SWEEP_DIR [--out DIR] [--wandb-mode offline|online|disabled]`."""
from __future__ import annotations

from pathlib import Path

from benchmarks.cli import Parser, bad_input_exits, writable_dir
from benchmarks.sweep.stored import read_plan, read_settings

from . import build_report

PROG = "benchmarks.report"


def main(argv=None) -> int:
    p = Parser(prog=PROG, description="Tables, figures and index.html of a sweep.")
    p.add_argument("sweep_dir", help="the sweep's directory in the result store (holds plan.json and trials/)")
    p.add_argument("--out", default=None, help="output directory (default: SWEEP_DIR/report)")
    p.add_argument("--wandb-mode", choices=("offline", "online", "disabled"), default=None,
                   help="also log the W&B summary run (default: no W&B)")
    p.add_argument("--wandb-project", default="molere-bench")
    p.add_argument("--select-epoch", choices=("last", "best"), default="last",
                   help="model selection on each trial's last epoch (default) or its best epoch by selection "
                        "accuracy (early stopping on the selection split)")
    a = p.parse_args(argv)
    with bad_input_exits(PROG):
        read_plan(a.sweep_dir)
        read_settings(a.sweep_dir)
        writable_dir(a.out or Path(a.sweep_dir) / "report", "--out")
    wb = None if a.wandb_mode is None else {"mode": a.wandb_mode, "project": a.wandb_project}
    r = build_report(a.sweep_dir, a.out, wb, selection_epoch=a.select_epoch)
    for n in r["notes"]:
        print(f"note: {n}")
    print(f"trials: {', '.join(f'{v} {k}' for k, v in r['counts'].items())}")
    print(f"report: {r['index']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
