"""The W&B dashboard of a sweep: `python -m benchmarks.dashboard SWEEP_DIR [--publish] [--entity E] [--project P]`.

Builds, with `wandb-workspaces`, a workspace (sections of panels over the sweep's runs, the run table
grouped by dataset / regime / method) and a report (the summary run's tables and figures, then one
panel grid per dataset x regime with its runs grouped by method). Every panel comes from keys the
sweep's runs actually logged (read from their local run files), so it works with or without optional
keys such as the reweighting diagnostics (`diag/*`). Offline, the specification is written to
SWEEP_DIR/dashboard/ (spec.json, the workspace's view spec, PUBLISH.md saying how to publish it);
online (or with --publish), the workspace and report are saved and their URLs printed.
"""
from __future__ import annotations

import argparse

from molere.config import ConfigError

from benchmarks.cli import Parser, bad_input_exits
from benchmarks.sweep.stored import read_plan

# wandb and wandb-workspaces are imported by benchmarks.wandb_io.dashboard once a dashboard is built: `--help` stays fast

PROG = "benchmarks.dashboard"


def main(argv=None) -> int:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="the sweep's directory in the result store (holds plan.json and wandb/)")
    p.add_argument("--publish", action="store_true", help="save the workspace and report to W&B (needs a login)")
    p.add_argument("--entity", default=None, help="W&B entity (default: the sweep's, else your default entity)")
    p.add_argument("--project", default=None, help="W&B project (default: the sweep's)")
    a = p.parse_args(argv)
    with bad_input_exits(PROG):
        read_plan(a.sweep_dir)
        try:
            from benchmarks.wandb_io.dashboard import build_dashboard
            out = build_dashboard(a.sweep_dir, {"project": a.project}, publish=a.publish or None, entity=a.entity)
        except FileNotFoundError as exc:     # no runs logged: nothing to build a dashboard from
            raise ConfigError(str(exc)) from None
    for line in out["messages"]:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
