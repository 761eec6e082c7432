"""Model selection: per dataset x regime x method, the hyperparameter draw chosen without the test set.

The selected draw has the best mean `selection/acc` over its finished seeds (the selection split: held out
of training, observed labels); ties go to the draw listed first in the plan. Every table, the ordering
check, the meta-learning effect, the figures and the W&B summary use only the selected draws. The oracle
draw (best mean test accuracy) appears only in the `selection` table, as the oracle gap. Gains pair the
selected draw of a method with the selected draw of ERM (and of its same-split control) seed by seed.
See docs/model_selection.md.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from benchmarks.trial.store import read_jsonl
from .methods import Methods
from .collect import is_acc_column

SELECTION = "selection/acc"
EPOCHS = {"last": "at the last epoch",
          "best": "at each trial's best evaluated epoch by selection accuracy (early stopping on the selection "
                  "split; test numbers from that epoch)"}
DRAW = ["dataset", "regime", "method", "hparams_id"]
CELL = ["dataset", "regime", "method"]


def rule(epoch: str = "last") -> str:
    return (f"model selection: per dataset x regime x method, the hyperparameter draw with the best mean "
            f"selection-split accuracy over seeds ({SELECTION}, observed labels, never trained on), "
            f"{EPOCHS[epoch]}; ties -> the draw listed first in the plan; gains pair it seed by seed with the "
            f"selected ERM draw")


def short_rule(epoch: str = "last") -> str:
    """The rule in a dozen words, for captions (the full rule is in the report's notes)."""
    return f"model selection: best mean selection-split accuracy per method, {epoch} epoch; full rule under Notes"


def at_best_epoch(df: pd.DataFrame, sweep_dir) -> pd.DataFrame:
    """Each done trial's accuracies replaced by those of its evaluated epoch with the best selection/acc
    (earliest on ties); column `selected_epoch` says which. Trials without per-epoch selection keep theirs."""
    df = df.copy()
    df["selected_epoch"] = np.nan
    cols = [c for c in df.columns if is_acc_column(c) or c.startswith("selection/")]
    for i, r in df[df["status"] == "done"].iterrows():
        rows = [x for x in read_jsonl(sweep_dir / "trials" / r["trial_id"] / "metrics.jsonl") if SELECTION in x]
        if not rows:
            continue
        best = max(rows, key=lambda x: (x[SELECTION], -x["epoch"]))
        df.at[i, "selected_epoch"] = best["epoch"]
        for c in cols:
            df.at[i, c] = float(best[c]) if best.get(c) is not None else np.nan
    return df


def _first_best(scores: pd.Series, order: pd.Series):
    """The index of the highest score, ties (and all-NaN) -> lowest `order`."""
    ok = scores.dropna()
    pool = ok[ok == ok.max()].index if len(ok) else scores.index
    return min(pool, key=lambda i: order[i])


def choose(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Add per-trial columns draw_selection_acc, draw_test_acc (means over the draw's done seeds), selected and
    oracle (the draw picked by selection / by test); returns the frame and notes."""
    df = df.copy()
    notes = []
    if SELECTION not in df:
        df[SELECTION] = np.nan
    if "reference_only" not in df:
        df["reference_only"] = False
    done = df["status"] == "done"
    for col, src in (("draw_selection_acc", SELECTION), ("draw_test_acc", "test/acc")):
        means = df[done].groupby(DRAW)[src].mean()
        df[col] = [means.get(k, np.nan) for k in zip(*(df[c] for c in DRAW))]
    df["selected"] = df["oracle"] = False
    for key, sub in df.groupby(CELL, sort=False):
        cand = sub[~sub["reference_only"].astype(bool)] if (~sub["reference_only"].astype(bool)).any() else sub
        draws = cand.groupby("hparams_id").agg(sel=("draw_selection_acc", "first"), test=("draw_test_acc", "first"),
                                               first=("plan_index", "min"))
        picked = _first_best(draws["sel"], draws["first"])
        oracle = _first_best(draws["test"], draws["first"])
        if len(draws) > 1 and draws["sel"].isna().all():
            notes.append(f"{'/'.join(map(str, key))}: no {SELECTION} (selection_fraction 0?); the first draw in "
                         "plan order is used")
        df.loc[cand.index[cand["hparams_id"] == picked], "selected"] = True
        df.loc[cand.index[cand["hparams_id"] == oracle], "oracle"] = True
    return df, notes


def _pair_key(df: pd.DataFrame) -> list[str]:
    """Selected draws pair on dataset, regime, seed and model (training settings are part of a draw)."""
    models = [json.loads(k)[3] for k in df["key"]]
    return [json.dumps([d, r, int(s), m], sort_keys=True) for d, r, s, m in zip(df["dataset"], df["regime"],
                                                                                df["seed"], models)]


def selected_frame(df: pd.DataFrame, mc: Methods) -> pd.DataFrame:
    """The trials of the selected draws, one variant per method, re-paired with the selected ERM draw and the
    selected same-split control of the same seed (erm_trial, control_trial, gains recomputed)."""
    sel = df[df["selected"]].copy()
    if sel.empty:
        return sel
    sel["variant"] = sel["method"]
    sel["key"] = _pair_key(sel)
    by = {(m, k): t for m, k, t in zip(sel["method"], sel["key"], sel["trial_id"])}
    ref = next((m for m in sel["method"].unique() if mc.is_reference(m)), None)
    sel["erm_trial"] = [None if m == ref else by.get((ref, k)) for m, k in zip(sel["method"], sel["key"])]
    sel["control_trial"] = [by.get((mc.control_of(m), k)) if mc.control_of(m) else None
                            for m, k in zip(sel["method"], sel["key"])]
    acc = sel.set_index("trial_id")["test/acc"]
    sel["gain_over_erm_pts"] = 100 * (sel["test/acc"] - sel["erm_trial"].map(acc))
    sel["minus_control_pts"] = 100 * (sel["test/acc"] - sel["control_trial"].map(acc))
    return sel


def add_selection_means(cells: pd.DataFrame, sel: pd.DataFrame) -> pd.DataFrame:
    """Column "selection/acc (mean)" on the cell frame (what bold follows)."""
    if cells.empty:
        return cells
    means = sel[sel["status"] == "done"].groupby(["dataset", "regime", "variant"])[SELECTION].mean()
    cells = cells.copy()
    cells[f"{SELECTION} (mean)"] = [means.get(k, np.nan) for k in zip(cells["dataset"], cells["regime"],
                                                                      cells["variant"])]
    return cells


def _draw_text(d: pd.DataFrame, hparams_id: str) -> str:
    """'<id> meta_lr=0.0052 train.lr=0.079': the draw's id and the settings that vary among its cell's draws."""
    settings = {}
    for h, hp, train in zip(d["hparams_id"], d["hparams"], d["train"] if "train" in d else ["{}"] * len(d)):
        settings[h] = {**json.loads(hp), **{f"train.{k}": v for k, v in json.loads(train).items()}}
    varied = sorted({k for s in settings.values() for k in s
                     if len({json.dumps(x.get(k), sort_keys=True) for x in settings.values()}) > 1})
    own = settings[hparams_id]
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    return " ".join([hparams_id, *(f"{k}={fmt(own.get(k))}" for k in varied)])


def selection_table(df: pd.DataFrame, mc: Methods, epoch: str = "last"):
    """Per dataset x regime x method: the selected draw and the oracle draw (best by test, for reference only)."""
    from .tables import Table
    rows = []
    done = df[df["status"] == "done"]
    first = {k: i for i, k in enumerate(dict.fromkeys(zip(df["dataset"], df["regime"])))}
    for (dataset, regime, method), sub in sorted(df.groupby(CELL, sort=False),
                                                 key=lambda kv: (first[kv[0][:2]], mc.rank(kv[0][2]))):
        d = sub[~sub["reference_only"].astype(bool)] if (~sub["reference_only"].astype(bool)).any() else sub
        s, o = d[d["selected"]], d[d["oracle"]]
        if s.empty:
            continue
        n_draws = d["hparams_id"].nunique()
        pct = lambda x: "n/a" if pd.isna(x) else f"{100 * x:.2f}"  # noqa: E731
        seeds = lambda x: int(((done["trial_id"].isin(x["trial_id"]))).sum())  # noqa: E731
        gap = 100 * (o["draw_test_acc"].iloc[0] - s["draw_test_acc"].iloc[0])
        rows.append({"dataset": dataset, "regime": regime, "method": method, "draws": str(n_draws),
                     "selected draw": _draw_text(d, s["hparams_id"].iloc[0]),
                     "selection acc (%)": pct(s["draw_selection_acc"].iloc[0]),
                     "test acc (%)": f"{pct(s['draw_test_acc'].iloc[0])} (n={seeds(s)})",
                     "oracle draw (best by test)": _draw_text(d, o["hparams_id"].iloc[0]),
                     "oracle test acc (%)": f"{pct(o['draw_test_acc'].iloc[0])} (n={seeds(o)})",
                     "oracle gap (pts)": "n/a" if pd.isna(gap) else f"{gap:+.2f}"})
    frame = pd.DataFrame(rows)
    table = Table("selection", "Model selection: selected draw vs oracle (best by test, reference only)",
                  "Selected = the draw with the best mean selection-split accuracy (rule under Notes). Accuracies: "
                  "mean over the draw's finished seeds. Oracle = the draw with the best mean test accuracy: shown only "
                  "to measure what selecting on test would add (oracle gap = oracle − selected test accuracy); never "
                  "bold, never used for any table, check or figure. Draw ids are hparams_id (method hyperparameters "
                  "plus drawn train.* settings; see trials.csv).", frame)
    return collapse_single_draws(table, mc)


def collapse_single_draws(table, mc: Methods):
    """On the page, methods with one draw (nothing to select, oracle gap 0) become one line; the files keep
    every row."""
    if table.frame.empty:
        return table
    single = table.frame["draws"] == "1"
    if single.any():
        names = list(dict.fromkeys(mc.label(m) for m in table.frame.loc[single, "method"]))
        table.collapsed = ("Every method has one hyperparameter draw: nothing was selected (oracle gap 0)."
                           if single.all() else
                           f"One draw each, nothing selected (oracle gap 0): {', '.join(names)}.")
        table.shown = list(table.frame.index[~single])
    return table
