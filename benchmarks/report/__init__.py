"""Sweep reports from the result store: tables (Markdown / CSV / LaTeX), the ordering check, the
meta-learning effect, figures, `index.html` and the W&B summary run.

    build_report(sweep_dir, out_dir=None, wandb_settings=None) -> dict
    python -m benchmarks.report SWEEP_DIR [--out DIR]
"""
from __future__ import annotations

import json
import traceback
from pathlib import Path

import pandas as pd

from benchmarks.sweep.stored import read_settings

from . import figures as F
from . import selection as S
from .collect import acc_columns, collect, ood_datasets, trials_csv
from .html import sweep_text, versions_of, write_index
from .margin_data import delta_bins, delta_summary, margin_deltas
from .reweighting import diagnostic_tables
from .stats import cells, meta_effect, ordering
from .tables import build_tables

__all__ = ["build_report"]


def sweep_name(sweep_dir: Path) -> str:
    name = read_settings(sweep_dir).get("name")
    return str(name) if name else sweep_dir.name


def _figures(df, cell_frame, deltas, bins, sweep_dir: Path, fig_dir: Path, notes: list) -> list[dict]:
    ood = ood_datasets(df)
    main, shifted = cell_frame[~cell_frame["dataset"].isin(ood)], cell_frame[cell_frame["dataset"].isin(ood)]
    jobs = [lambda: F.gain_bars(F.gain_frame(main, ["test/acc"]), fig_dir, "gains.png",
                                "Gain over ERM in test accuracy (selected draws)", notes) if len(main) else [],
            lambda: F.gain_bars(F.gain_frame(shifted, acc_columns(df)), fig_dir, "gains_ood.png",
                                "Gain over ERM, datasets with OOD / group test splits (selected draws)",
                                notes) if ood else [],
            lambda: F.margin_histograms(deltas, fig_dir, notes),
            lambda: F.margin_bins(bins, fig_dir, notes),
            lambda: F.training_curves(df, sweep_dir, fig_dir, notes)]
    out = []
    for job in jobs:
        try:
            out += job()
        except Exception as exc:  # noqa: BLE001 — one broken figure must not cost the report
            notes.append(f"figure failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
    return out


def build_report(sweep_dir, out_dir=None, wandb_settings: dict | None = None, selection_epoch: str = "last") -> dict:
    """Write the report of the sweep at `sweep_dir` (default output: SWEEP_DIR/report/); returns what was
    written: {"out_dir", "index", "trials_csv", "tables": {name: {md, csv, tex}}, "figures", "notes",
    "counts", "wandb", "selection_rule"}. Every table and figure uses the selected draws (report.selection;
    `selection_epoch`: "last" or "best")."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir else sweep_dir / "report"
    tab_dir, fig_dir = out / "tables", out / "figures"
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    df = collect(sweep_dir)
    rule = S.rule(selection_epoch)
    notes.append(rule[0].upper() + rule[1:] + "; every table, check and figure uses the selected draws; the oracle "
                 "(best by test) appears only in the selection table")
    if len(df):
        if selection_epoch == "best":
            df = S.at_best_epoch(df, sweep_dir)
        df, sel_notes = S.choose(df)
        notes += sel_notes
    name = sweep_name(sweep_dir)
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    if df.empty:
        notes.append("plan.json lists no trials")
    for r in df[df["failure"].str.startswith("not trusted")].itertuples() if len(df) else ():
        notes.append(f"trial {r.trial_id} ({r.dataset}/{r.regime}/{r.method}/seed {r.seed}) {r.failure}; "
                     "its results are left out (rerun the sweep to redo it)")
    trials_csv(df).to_csv(out / "trials.csv", index=False) if len(df) else (out / "trials.csv").write_text("")
    sel = S.selected_frame(df) if len(df) else df
    cell_frame = S.add_selection_means(cells(sel), sel) if len(sel) else pd.DataFrame()
    order = ordering(sel) if len(sel) else pd.DataFrame()
    meta = meta_effect(sel) if len(sel) else pd.DataFrame()
    tables = build_tables(cell_frame, order, meta, selection_note=rule) + diagnostic_tables(sel, sweep_dir)
    if len(df):
        tables.append(S.selection_table(df, selection_epoch))
    written = {t.name: t.write(tab_dir) for t in tables}
    deltas = margin_deltas(sel, sweep_dir) if len(sel) else {}
    bins, dsum = delta_bins(deltas), delta_summary(deltas)
    tab_dir.mkdir(parents=True, exist_ok=True)
    bins.to_csv(tab_dir / "margin_bins.csv", index=False)
    dsum.to_csv(tab_dir / "margin_deltas.csv", index=False)
    figs = _figures(sel, cell_frame, deltas, bins, sweep_dir, fig_dir, notes) if len(sel) else []
    (out / "report.md").write_text(f"# Sweep report: {name}\n\n" + "".join(f"- {n}\n" for n in notes) + "\n" +
                                   "\n".join(t.markdown() for t in tables))
    configs = []
    for tid in df.get("trial_id", []):
        p = sweep_dir / "trials" / tid / "config.json"
        try:
            configs.append(json.loads(p.read_text()) if p.exists() else {})
        except ValueError:
            pass
    index = write_index(out, name, counts, tables, figs, notes, sweep_text(sweep_dir), versions_of(configs))
    result = {"out_dir": str(out), "index": str(index), "trials_csv": str(out / "trials.csv"), "tables": written,
              "figures": [str(fig_dir / f["file"]) for f in figs], "notes": notes, "counts": counts, "wandb": None,
              "selection_rule": rule}
    if wandb_settings is not None:
        frames = {"trials": trials_csv(df) if len(df) else df, "margin_bins": bins, "margin_deltas": dsum,
                  "numeric": {"results": cell_frame, "ordering": order, "meta_effect": meta}}
        from .wandb_summary import log_summary
        result["wandb"] = log_summary(name, tables, frames, figs, fig_dir, wandb_settings,
                                      extra_config={"model_selection": rule})
        if result["wandb"]["error"]:
            notes.append(f"W&B summary not logged: {result['wandb']['error']}")
    return result
