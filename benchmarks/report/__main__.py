"""`python -m benchmarks.report SWEEP_DIR [--out DIR] [--wandb-mode offline|online|disabled]`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import build_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.report", description="Tables, figures and index.html of a sweep.")
    p.add_argument("sweep_dir", help="the sweep's directory in the result store (holds plan.json and trials/)")
    p.add_argument("--out", default=None, help="output directory (default: SWEEP_DIR/report)")
    p.add_argument("--wandb-mode", choices=("offline", "online", "disabled"), default=None,
                   help="also log the W&B summary run (default: no W&B)")
    p.add_argument("--wandb-project", default="molere-bench")
    p.add_argument("--select-epoch", choices=("last", "best"), default="last",
                   help="model selection on each trial's last epoch (default) or its best epoch by selection "
                        "accuracy (early stopping on the selection split)")
    a = p.parse_args(argv)
    if not (Path(a.sweep_dir) / "plan.json").exists():
        print(f"benchmarks.report: error: {a.sweep_dir}: no plan.json (expected a sweep directory of the "
              "result store)", file=sys.stderr)
        return 2
    try:
        json.loads((Path(a.sweep_dir) / "plan.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"benchmarks.report: error: {a.sweep_dir}/plan.json: unreadable ({type(exc).__name__}: "
              f"{str(exc)[:120]}); rerun the sweep to rewrite it", file=sys.stderr)
        return 2
    wb = None if a.wandb_mode is None else {"mode": a.wandb_mode, "project": a.wandb_project}
    r = build_report(a.sweep_dir, a.out, wb, selection_epoch=a.select_epoch)
    for n in r["notes"]:
        print(f"note: {n}")
    print(f"trials: {', '.join(f'{v} {k}' for k, v in r['counts'].items())}")
    print(f"report: {r['index']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
