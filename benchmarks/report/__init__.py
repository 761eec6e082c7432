"""Sweep reports from the result store: the summary (the answer), figures, tables (Markdown / CSV / LaTeX),
`index.html` and the W&B summary run.

    build_report(sweep_dir, out_dir=None, wandb_settings=None, only=None) -> dict
    python -m benchmarks.report SWEEP_DIR [--out DIR] [--only KEY=V1,V2 ...]

pandas, matplotlib and W&B are imported when a report is built, not when this package is (`--help` stays
fast); the summary run is logged by `benchmarks.wandb_io.summary`.
"""
from __future__ import annotations

import json
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["build_report"]


def sweep_name(sweep_dir: Path) -> str:
    from benchmarks.sweep.stored import read_settings
    name = read_settings(sweep_dir).get("name")
    return str(name) if name else sweep_dir.name


def _figures(df, cell_frame, deltas, bins, sweep_dir: Path, fig_dir: Path, notes: list, mc) -> list[dict]:
    from . import figures as F
    from .collect import acc_columns, ood_datasets
    ood = ood_datasets(df)
    main, shifted = cell_frame[~cell_frame["dataset"].isin(ood)], cell_frame[cell_frame["dataset"].isin(ood)]
    jobs = [lambda: F.gain_bars(F.gain_frame(main, ["test/acc"], mc), fig_dir, "gains.png",
                                "Gain over ERM in test accuracy (selected draws)", notes, mc) if len(main) else [],
            lambda: F.gain_bars(F.gain_frame(shifted, acc_columns(df), mc), fig_dir, "gains_ood.png",
                                "Gain over ERM, datasets with OOD / group test splits (selected draws)",
                                notes, mc) if ood else [],
            lambda: F.training_curves(df, sweep_dir, fig_dir, notes, mc),
            lambda: F.margin_histograms(deltas, fig_dir, notes, mc),
            lambda: F.margin_bins(bins, fig_dir, notes, mc)]
    out = []
    for job in jobs:
        try:
            out += job()
        except Exception as exc:  # noqa: BLE001 — one broken figure must not cost the report
            notes.append(f"figure failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
    return out


def default_out(sweep_dir: Path, only: dict | None) -> Path:
    """SWEEP_DIR/report, or SWEEP_DIR/report-<filter> for a subset (the whole store's report stays)."""
    if not only:
        return sweep_dir / "report"
    text = "_".join(f"{k}-{'+'.join(sorted(v))}" for k, v in sorted(only.items()))
    return sweep_dir / ("report-" + re.sub(r"[^A-Za-z0-9_.+-]+", "_", text))


def _configs(sweep_dir: Path, trial_ids) -> list[dict]:
    configs = []
    for tid in trial_ids:
        p = sweep_dir / "trials" / tid / "config.json"
        try:
            configs.append(json.loads(p.read_text()) if p.exists() else {})
        except ValueError:
            pass
    return configs


@dataclass
class _Analysis:
    """The selected draws and what the report derives from them (empty frames for an empty store)."""
    sel: Any
    cell_frame: Any
    order: Any
    meta: Any
    like: list
    summary: Any


def _load(sweep_dir: Path, selection_epoch: str, only: dict | None) -> tuple:
    """The store's trials with the selection applied: (df, mc, rule, counts, notes, warnings)."""
    from . import selection as S
    from .collect import collect
    df, mc = collect(sweep_dir, only)   # mc: this store's method cards, passed to every part
    rule = S.rule(selection_epoch)
    notes = [rule[0].upper() + rule[1:] + "; every table, check and figure uses the selected draws; the oracle "
             "(best by test) appears only in the selection table"]
    if only:
        notes.append("Subset of the store: " + "; ".join(f"{k} in {sorted(v)}" for k, v in sorted(only.items()))
                     + " (the reference method kept)")
    if len(df):
        if selection_epoch == "best":
            df = S.at_best_epoch(df, sweep_dir)
        df, sel_notes = S.choose(df)
        notes += sel_notes
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    warnings = [] if len(df) else ["plan.json lists no trials"]
    for r in df[df["status"] == "diverged"].itertuples() if len(df) else ():
        notes.append(f"trial {r.trial_id} ({r.dataset}/{r.regime}/{r.method}/seed {r.seed}) {r.failure}; counted as "
                     "diverged in every table and figure, never averaged in")
    for r in df[df["failure"].str.startswith("not trusted")].itertuples() if len(df) else ():
        warnings.append(f"trial {r.trial_id} ({r.dataset}/{r.regime}/{r.method}/seed {r.seed}) {r.failure}; "
                        "its results are left out (rerun the sweep to redo it)")
    return df, mc, rule, counts, notes, warnings


def _analyse(df, sweep_dir: Path, mc, notes: list) -> _Analysis:
    """Cells, ordering, meta effect, like-for-like tables (their sizes lead `notes`) and the summary."""
    import pandas as pd

    from . import like_for_like as L
    from . import selection as S
    from .stats import cells, meta_effect, ordering
    from .summary import summary_table
    sel = S.selected_frame(df, mc) if len(df) else df
    cell_frame = S.add_selection_means(cells(sel, mc), sel) if len(sel) else pd.DataFrame()
    order = ordering(sel, mc) if len(sel) else pd.DataFrame()
    meta = meta_effect(sel, mc) if len(sel) else pd.DataFrame()
    sizes, like = L.tables(sel, df, sweep_dir, mc) if len(df) else ([], [])   # like-for-like: sizes, counts, budgets
    notes[:0] = sizes
    results = L.read_results(sel, sweep_dir) if len(sel) else {}
    pairs = L.same_data_pairs(sel, results, mc, L.pooled_methods(sweep_dir)) if len(sel) else None
    summary = summary_table(cell_frame, order, meta, sel, sweep_dir, mc, pairs) if len(cell_frame) else None
    return _Analysis(sel, cell_frame, order, meta, like, summary)


def _tables(a: _Analysis, df, sweep_dir: Path, mc, selection_epoch: str) -> list:
    """Every table after the summary: results, like-for-like, ordering, diagnostics, the selection table."""
    from . import selection as S
    from .reweighting import diagnostic_tables
    from .tables import build_tables
    tables = build_tables(a.cell_frame, a.order, a.meta, mc, selection_note=S.short_rule(selection_epoch))
    tables[1:1] = a.like
    tables += diagnostic_tables(a.sel, sweep_dir) + ([S.selection_table(df, mc, selection_epoch)] if len(df) else [])
    return tables


def _margins(sel, sweep_dir: Path, mc, tab_dir: Path) -> tuple:
    """Margin deltas against ERM, binned and summarised (written as CSV): (deltas, bins, summary)."""
    from .margin_data import delta_bins, delta_summary, margin_deltas
    deltas = margin_deltas(sel, sweep_dir, mc) if len(sel) else {}
    bins, dsum = delta_bins(deltas), delta_summary(deltas)
    tab_dir.mkdir(parents=True, exist_ok=True)
    bins.to_csv(tab_dir / "margin_bins.csv", index=False)
    dsum.to_csv(tab_dir / "margin_deltas.csv", index=False)
    return deltas, bins, dsum


def _log_wandb(result: dict, name: str, shown: list, frames: dict, figs: list, fig_dir: Path,
               wandb_settings: dict) -> None:
    """Log the summary run (result["wandb"]); a failure becomes a note."""
    from benchmarks.wandb_io.summary import log_summary
    result["wandb"] = log_summary(name, shown, frames, figs, fig_dir, wandb_settings,
                                  extra_config={"model_selection": result["selection_rule"]})
    if result["wandb"]["error"]:
        result["notes"].append(f"W&B summary not logged: {result['wandb']['error']}")


def build_report(sweep_dir, out_dir=None, wandb_settings: dict | None = None, selection_epoch: str = "last",
                 only: dict[str, set[str]] | None = None) -> dict:
    """Write the report of the sweep at `sweep_dir` (of the plan entries matching `only`, default all); returns
    {"out_dir", "index", "trials_csv", "tables": {name: {md, csv, tex}}, "figures", "notes", "counts", "wandb",
    "selection_rule", "summary" (the summary Table or None)}. Every table and figure uses the selected draws."""
    from .collect import trials_csv
    from .html import Page, sweep_text, versions_of, write_index
    from .paper_pages import write_paper_pages

    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir else default_out(sweep_dir, only)
    tab_dir, fig_dir = out / "tables", out / "figures"
    out.mkdir(parents=True, exist_ok=True)
    df, mc, rule, counts, notes, warnings = _load(sweep_dir, selection_epoch, only)
    trials_csv(df).to_csv(out / "trials.csv", index=False) if len(df) else (out / "trials.csv").write_text("")
    a = _analyse(df, sweep_dir, mc, notes)
    tables = _tables(a, df, sweep_dir, mc, selection_epoch)
    shown = ([a.summary] if a.summary else []) + tables
    written = {t.name: t.write(tab_dir) for t in shown}
    deltas, bins, dsum = _margins(a.sel, sweep_dir, mc, tab_dir)
    figs = _figures(a.sel, a.cell_frame, deltas, bins, sweep_dir, fig_dir, notes, mc) if len(a.sel) else []
    name = sweep_name(sweep_dir)
    (out / "report.md").write_text(f"# Sweep report: {name}\n\n" + "\n".join(t.markdown() for t in shown)
                                   + "\n## Notes\n\n" + "".join(f"- {n}\n" for n in warnings + notes))
    page = Page(out, name, counts, a.summary, tables, figs, warnings + notes, sweep_text(sweep_dir),
                versions_of(_configs(sweep_dir, df.get("trial_id", []))), warnings, mc)
    index = write_index(page)
    paper = write_paper_pages(sweep_dir, out, a.sel, a.cell_frame, a.order, dsum, index, warnings + notes,
                              mc)   # verdict
    result = {"out_dir": str(out), "index": str(index), "trials_csv": str(out / "trials.csv"), "tables": written,
              "figures": [str(fig_dir / f["file"]) for f in figs], "notes": warnings + notes, "counts": counts,
              "wandb": None, "selection_rule": rule, "summary": a.summary, "paper_pages": paper}
    if wandb_settings is not None:
        frames = {"trials": trials_csv(df) if len(df) else df, "margin_bins": bins, "margin_deltas": dsum,
                  "numeric": {"results": a.cell_frame, "ordering": a.order, "meta_effect": a.meta}}
        _log_wandb(result, name, shown, frames, figs, fig_dir, wandb_settings)
    return result
