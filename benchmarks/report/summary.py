"""The report's answer, first: one table of every method's gain over its same-data reference (95% CI; cells
whose interval excludes 0 marked), the ordering verdict and the reweighting verdict, per dataset x regime.

`reference_gains` is the one place that says what a gain is measured against: per trial, the reference whose
realised data matches (`benchmarks.report.like_for_like.same_data_pairs`: ERM, or erm_train_val for a method
that learned from val), paired by seed; ERM of the same seed and training settings when no pairs are given.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .methods import Methods
from .tables import Table, num

MARK = " *"
ORDERING, REWEIGHTING, WEIGHTS = "Ordering", "Reweighting (method − same-split control)", "Weights"


def reference_of(method: str, mc: Methods) -> str:
    """The method whose trials `method`'s gain is measured against (the plan's reference: ERM)."""
    return next((m for m in mc.methods() if mc.is_reference(m)), "erm")


def _same_data_gains(sel: pd.DataFrame, pairs: pd.DataFrame, mc: Methods) -> list[dict]:
    from .stats import paired
    done = sel[sel["status"] == "done"].set_index("trial_id")["test/acc"]
    pairs = pairs.set_index("trial_id")
    rows = []
    for (dataset, regime, variant), sub in sel.groupby(["dataset", "regime", "variant"], sort=False):
        method = sub["method"].iloc[0]
        if mc.is_reference(method) or not sub["trial_id"].isin(pairs.index).all():
            continue
        p = pairs.loc[sub["trial_id"]]
        refs = p["ref_method"].dropna()
        s = paired(sub["trial_id"].map(done).to_numpy(float), p["ref_trial"].map(done).to_numpy(float))
        rows.append({"dataset": dataset, "regime": regime, "variant": variant, "method": method,
                     "reference": refs.mode().iloc[0] if len(refs) else reference_of(method, mc),
                     **{k: s[k] for k in ("mean", "lo", "hi", "n", "zero_var")}})
    return rows


def reference_gains(cells: pd.DataFrame, mc: Methods, sel: pd.DataFrame | None = None,
                    pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per dataset x regime x non-reference variant: its reference and the paired gain (points) — against
    the same-data reference of `pairs` (per trial, over the selected trials `sel`) when given."""
    columns = ["dataset", "regime", "variant", "method", "reference", "mean", "lo", "hi", "n", "zero_var"]
    if sel is not None and pairs is not None and len(pairs):
        return pd.DataFrame(_same_data_gains(sel, pairs, mc), columns=columns)
    rows = []
    for _, r in cells[~cells["method"].map(mc.is_reference)].iterrows():
        rows.append({"dataset": r["dataset"], "regime": r["regime"], "variant": r["variant"], "method": r["method"],
                     "reference": reference_of(r["method"], mc),
                     **{k: r.get(f"gain {k}", np.nan) for k in ("mean", "lo", "hi", "n", "zero_var")}})
    return pd.DataFrame(rows, columns=["dataset", "regime", "variant", "method", "reference", "mean", "lo", "hi",
                                       "n", "zero_var"])


def excludes_zero(s) -> bool:
    lo, hi = s.get("lo", np.nan), s.get("hi", np.nan)
    return bool(np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0))


def interval(s) -> str:
    """'+1.23 [-0.50, +2.96]', 'n/a (n=1)' or '+0.19 (zero var.)'."""
    if not s.get("n"):
        return "n/a (no pair)"
    if bool(s.get("zero_var")):
        return f"{num(s['mean'], sign=True)} (zero var.)"
    if not np.isfinite(s.get("lo", np.nan)):
        return f"{num(s['mean'], sign=True)} (n={int(s['n'])})"
    return f"{num(s['mean'], sign=True)} [{num(s['lo'], sign=True)}, {num(s['hi'], sign=True)}]"


def _ordering_row(order: pd.DataFrame) -> dict:
    out = {}
    for _, r in order.iterrows():
        gaps = [v for k, v in r.items() if " - " in str(k) and isinstance(v, dict)]
        with_ci = [g for g in gaps if np.isfinite(g.get("lo", np.nan))]
        sure = sum(excludes_zero(g) for g in with_ci)
        cis = f"{sure}/{len(gaps)} gap CIs exclude 0" if with_ci else "no CIs"
        out[f"{r['dataset']} / {r['regime']}"] = f"{r['holds']}; {cis} (n={r['paired seeds']})"
    return out


def _reweighting_row(meta: pd.DataFrame, mc: Methods) -> dict:
    out = {}
    for (dataset, regime), g in meta.groupby(["dataset", "regime"], sort=False):
        stats = [(mc.label(r["variant"]), r["minus control"]) for _, r in g.iterrows()
                 if np.isfinite(r["minus control"].get("lo", np.nan))]
        sure = [f"{lbl} {interval(s)}" for lbl, s in stats if excludes_zero(s)]
        out[f"{dataset} / {regime}"] = (("; ".join(sure) + MARK) if sure else
                                        f"none: all {len(stats)} CIs include 0" if stats else
                                        "n/a (fewer than two paired seeds)")
    return out


def _weights_row(sel: pd.DataFrame, sweep_dir) -> dict:
    """Per dataset / regime: the runs' verdicts on what φ learned (molere.diagnostics.verdict)."""
    from .reweighting import trial_results, verdict_text
    results = trial_results(sel, sweep_dir)
    out = {}
    for (dataset, regime), g in sel.groupby(["dataset", "regime"], sort=False):
        diags = [results[t]["reweighting"] for t in g["trial_id"] if t in results and results[t].get("reweighting")]
        if diags:
            out[f"{dataset} / {regime}"] = verdict_text(diags)
    return out


def summary_table(cells: pd.DataFrame, order: pd.DataFrame, meta: pd.DataFrame, sel: pd.DataFrame,
                  sweep_dir, mc: Methods, pairs: pd.DataFrame | None = None) -> Table | None:
    """The summary: rows = methods (display order) then the three verdicts; columns = dataset / regime. Gains are
    against each trial's same-data reference (`pairs`, benchmarks.report.like_for_like) when given."""
    gains = reference_gains(cells, mc, sel, pairs)
    if gains.empty:
        return None
    columns = list(dict.fromkeys(f"{d} / {r}" for d, r in zip(cells["dataset"], cells["regime"])))
    rows, bold = [], set()
    for variant, g in sorted(gains.groupby("variant", sort=False), key=lambda kv: mc.rank(kv[1]["method"].iloc[0])):
        row = {"method": mc.label(variant), "reference": mc.label(g["reference"].iloc[0])}
        for _, r in g.iterrows():
            col, s = f"{r['dataset']} / {r['regime']}", r.to_dict()
            row[col] = interval(s) + (MARK if excludes_zero(s) else "")
            if excludes_zero(s):
                bold.add((len(rows), col))
        rows.append(row)
    verdicts = [(ORDERING + ": " + mc.ordering_claim(), _ordering_row(order) if len(order) else {}),
                (REWEIGHTING, _reweighting_row(meta, mc) if len(meta) else {}),
                (WEIGHTS + " (what φ learned, training split)", _weights_row(sel, sweep_dir))]
    for name, cells_ in verdicts:
        if cells_:
            rows.append({"method": name, "reference": "", **cells_})
            bold |= {(len(rows) - 1, c) for c, v in cells_.items() if v.endswith(MARK)}
    frame = pd.DataFrame(rows).reindex(columns=["method", "reference", *columns]).fillna("")
    return Table("summary", "Gain over the same-data reference (accuracy points, 95% CI) and the verdicts",
                 "Gain: the method's test accuracy minus its reference's (the ERM whose realised data matches: "
                 "erm_train_val for a method that learned from val; same seed and training settings), "
                 "mean over paired seeds with a 95% t-interval (n/a: fewer than two pairs). Ordering: the paper's "
                 "claimed order, judged on the paired mean gaps (Ordering check table). Reweighting: each train-twice "
                 "method minus ERM trained on exactly its split (Meta-learning effect table). Weights: how many "
                 "runs' φ learned, moved but stayed constant, or stayed untrained (Does the reweighting do anything? "
                 "table).", frame, bold,
                 legend="Bold, *: the 95% CI excludes 0 (distinguishable from no difference at this number of seeds).")


def plain_text(table: Table) -> str:
    """The summary for a terminal: an aligned text table (bold shown as the trailing *)."""
    return table.frame.to_string(index=False, justify="left")
