"""Seed-paired comparisons: mean difference in accuracy points, 95% t-interval and paired t-test p-value.

With fewer than two pairs the interval and p-value are NaN (shown as n/a), never invented; so are they
when every paired difference is the same (`zero_var`: a zero-width interval and a p-value from
floating-point noise would claim a certainty that two or three seeds cannot give).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from .methods import Methods
from .collect import acc_columns

TEST_NAME = "paired t-test (scipy.stats.ttest_rel), 95% CI from the t distribution"
NON_DONE = ("diverged", "failed", "missing", "incomplete")   # counted in every cell, never averaged in
ZERO_VARIANCE_PTS = 1e-9   # paired differences (accuracy points) this close are identical up to rounding


def paired(a, b) -> dict:
    """Mean of 100*(a - b) over pairs, its 95% t-interval and the two-sided paired t-test p-value."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    d = 100 * (a - b)
    n = len(d)
    out = {"n": n, "mean": float(d.mean()) if n else np.nan, "lo": np.nan, "hi": np.nan, "p": np.nan,
           "zero_var": bool(n >= 2 and np.ptp(d) <= ZERO_VARIANCE_PTS)}
    if n >= 2 and not out["zero_var"]:
        half = sps.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
        out.update(lo=out["mean"] - half, hi=out["mean"] + half)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["p"] = float(sps.ttest_rel(a, b).pvalue)
    return out


def status_note(sub: pd.DataFrame) -> str:
    """'1 diverged, 2 failed, 1 missing' for the trials of `sub` that are not results ('' when all are)."""
    counts = sub["status"].value_counts()
    return ", ".join(f"{counts[s]} {s}" for s in NON_DONE if counts.get(s, 0))


def _pairs(df: pd.DataFrame, partner_col: str, metric: str = "test/acc"):
    done = df[df["status"] == "done"]
    acc = done.set_index("trial_id")[metric] if metric in done else pd.Series(dtype=float)
    return lambda sub: (sub["trial_id"].map(acc).to_numpy(float), sub[partner_col].map(acc).to_numpy(float))


def cells(df: pd.DataFrame, mc: Methods) -> pd.DataFrame:
    """One row per dataset x regime x variant: accuracy mean/std/n per metric, status counts, gain over ERM
    in test accuracy ("gain mean/lo/hi/p/n") and in every other accuracy present ("gain[<metric>] mean", ...)."""
    rows = []
    metrics = acc_columns(df)
    erm_pairs = {m: _pairs(df, "erm_trial", m) for m in metrics}
    for (dataset, regime, variant), sub in df.groupby(["dataset", "regime", "variant"], sort=False):
        done = sub[sub["status"] == "done"]
        row = {"dataset": dataset, "regime": regime, "variant": variant, "method": sub["method"].iloc[0],
               "planned": len(sub), "done": len(done), "note": status_note(sub)}
        for s in NON_DONE:
            row[s] = int((sub["status"] == s).sum())
        for m in metrics:
            v = done[m].dropna().to_numpy(float) if m in done else np.array([])
            row[f"{m} mean"] = float(v.mean()) if len(v) else np.nan
            row[f"{m} std"] = float(v.std(ddof=1)) if len(v) > 1 else np.nan
            row[f"{m} n"] = len(v)
        if not mc.is_reference(row["method"]):
            row.update({f"gain {k}": v for k, v in paired(*erm_pairs["test/acc"](sub)).items()})
            for m in metrics[1:]:
                if row[f"{m} n"]:
                    row.update({f"gain[{m}] {k}": v for k, v in paired(*erm_pairs[m](sub)).items()})
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = {k: i for i, k in enumerate(dict.fromkeys(zip(df["dataset"], df["regime"])))}
    out["_o"] = [(order[(d, r)], mc.rank(m), v) for d, r, m, v in
                 zip(out["dataset"], out["regime"], out["method"], out["variant"])]
    return out.sort_values("_o").drop(columns="_o").reset_index(drop=True)


def _by_method(sub: pd.DataFrame, method: str) -> pd.DataFrame:
    """The trials of `method` under its first hyperparameter setting (plan order)."""
    m = sub[sub["method"] == method]
    return m[m["hparams_id"] == m["hparams_id"].iloc[0]] if len(m) else m


def ordering(df: pd.DataFrame, mc: Methods) -> pd.DataFrame:
    """Per dataset x regime: means of the ordering members (e.g. Easy/Random/Hard/MOLERE), whether their claimed
    order (e.g. Easy < Random < Hard <= MOLERE) holds, and for each adjacent pair of present members the paired
    gap (later - earlier) with CI and p.

    Means, verdict and gaps all use the same paired seeds: the pairing keys every present member finished
    (a seed missing for one member is left out for all; `n` says how many remain)."""
    rows = []
    members = mc.ordering_members()
    for (dataset, regime), sub in df.groupby(["dataset", "regime"], sort=False):
        parts = {m: _by_method(sub, m) for m in members}
        accs = {m: _done_acc(p) for m, p in parts.items()}
        present = [m for m in members if len(accs[m])]
        if len(present) < 2:
            continue
        common = accs[present[0]].index
        for m in present[1:]:
            common = common.intersection(accs[m].index)
        means = {m: accs[m][common].mean() * 100 if m in present and len(common) else np.nan for m in members}
        row = {"dataset": dataset, "regime": regime, **{f"{m} mean": means[m] for m in members},
               "paired seeds": len(common)}
        holds = bool(len(common))
        for lo, hi in zip(present, present[1:]):
            strict = mc.relation(hi) == "<"
            s = paired(accs[hi][common].to_numpy(float), accs[lo][common].to_numpy(float))
            ok = bool(s["n"]) and (s["mean"] > 0 if strict else s["mean"] >= 0)
            holds &= ok
            row[f"{hi} - {lo}"] = {**s, "relation": "<" if strict else "≤", "holds": ok}
        absent = [m for m in members if m not in present]
        row["holds"] = ("yes" if holds else "no") + (f" (without {', '.join(absent)})" if absent else "")
        row["note"] = "; ".join(f"{m}: {n}" for m in members if (n := status_note(parts[m])))
        rows.append(row)
    return pd.DataFrame(rows)


def _done_acc(part: pd.DataFrame) -> pd.Series:
    """Test accuracy of the finished trials, indexed by pairing key."""
    if not len(part) or "test/acc" not in part:
        return pd.Series(dtype=float)
    done = part[part["status"] == "done"]
    return done.set_index("key")["test/acc"].dropna()


def meta_effect(df: pd.DataFrame, mc: Methods) -> pd.DataFrame:
    """Per dataset x regime x train-twice variant: its gain over ERM, the control's gain over ERM and the
    variant minus its same-split ERM control (all paired by seed)."""
    rows = []
    erm_pairs, ctl_pairs = _pairs(df, "erm_trial"), _pairs(df, "control_trial")
    for (dataset, regime, variant), sub in df.groupby(["dataset", "regime", "variant"], sort=False):
        method = sub["method"].iloc[0]
        control = mc.control_of(method)
        if control is None:
            continue
        ctl = df[(df["dataset"] == dataset) & (df["regime"] == regime) & (df["method"] == control)]
        ctl_erm = erm_pairs(ctl) if len(ctl) else ([], [])
        notes = [f"{w}: {n}" for n, w in ((status_note(sub), variant), (status_note(ctl), control)) if n]
        if not len(ctl):
            notes.append(f"{control} not planned")
        rows.append({"dataset": dataset, "regime": regime, "variant": variant, "method": method, "control": control,
                     "gain": paired(*erm_pairs(sub)), "control gain": paired(*ctl_erm),
                     "minus control": paired(*ctl_pairs(sub)), "note": "; ".join(notes)})
    return pd.DataFrame(rows)
