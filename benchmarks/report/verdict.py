"""The reproduction verdict of any store: each claim of the paper the store can test, judged from the store
alone — reproduced (the 95% CI lies on the claimed side of 0), contradicted (on the opposite side) or
inconclusive (it spans 0, or fewer than two seeds) — with the effect, CI, n, the paired test, the reference
it was measured against and the scale against the paper's. The paper's value is shown, never used to judge.

Claims: the ordering LRW-Easy < LRW-Random < LRW-Hard ≤ MOLERE (each adjacent gap); MOLERE's gain over ERM;
MOLERE ≥ each other method; the mean test-margin delta against ERM > 0 (MOLERE, LRW-Hard); Hard − Easy
separation across ERM-margin bins (bin-averaged, per seed).
"""
from __future__ import annotations


import numpy as np
import pandas as pd

from molere import margins as M

from .methods import Methods
from . import paper_numbers as P
from .collect import test_margins
from .scale import scale_line, store_scale
from .stats import TEST_NAME, paired
from .tables import Table, num, pval

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
ERM_REFERENCE = "ERM of the same dataset, regime, seed, model and training settings"
PAIRED, ONE_SAMPLE = "paired t-test over seeds", "one-sample t-test over seeds"


def judge(s: dict) -> str:
    """The verdict of a claimed-positive effect: its CI above 0, below 0, or neither (or no CI)."""
    lo, hi = s.get("lo", np.nan), s.get("hi", np.nan)
    if s.get("n", 0) < 2 or pd.isna(lo) or pd.isna(hi):
        return INCONCLUSIVE
    return REPRODUCED if lo > 0 else CONTRADICTED if hi < 0 else INCONCLUSIVE


def reference_trial(df: pd.DataFrame) -> tuple[str, str]:
    """(column of each row's reference trial id, its description) — the one place to plug in the report's
    same-data reference (an ERM that saw the same data) once the store carries it; ERM of the same key today."""
    if "same_data_trial" in df.columns and df["same_data_trial"].notna().any():
        return "same_data_trial", "the same-data reference recorded by the report (same_data_trial)"
    return "erm_trial", ERM_REFERENCE


def _row(claim, dataset, regime, comparison, s, test, reference, paper="—") -> dict:
    return {"claim": claim, "dataset": dataset, "regime": regime, "comparison": comparison, "verdict": judge(s),
            "effect": s.get("mean", np.nan), "lo": s.get("lo", np.nan), "hi": s.get("hi", np.nan),
            "n": int(s.get("n", 0)), "p": s.get("p", np.nan), "test": test, "reference": reference, "paper": paper}


def _scaled(s: dict, factor: float) -> dict:
    return {**s, **{k: s[k] * factor for k in ("mean", "lo", "hi") if k in s}}


def _paper_gain(dataset: str, method: str, minus: str | None = None) -> str:
    """The paper's Figure 1 / 2 gain (or gap) for our dataset, when the paper has that dataset."""
    for name in ("figure1", "figure2"):
        for row in P.paper_rows_of(dataset):
            a = [P.value(name, row, lab) for lab in P.labels_of(method)]
            b = [P.value(name, row, lab) for lab in P.labels_of(minus)] if minus else [P.Value(0.0)]
            if a and a[0] is not None and b and b[0] is not None:
                return f"{a[0].value - b[0].value:+.2f} ({row}, {name})"
    return "—"


def _accs(df: pd.DataFrame, method: str) -> pd.Series:
    done = df[(df["method"] == method) & (df["status"] == "done")]
    return done.set_index("key")["test/acc"].dropna()


def ordering_claims(order: pd.DataFrame, mc: Methods) -> list[dict]:
    """One row per adjacent gap of the ordering check (stats.ordering), and one for the whole chain."""
    rows = []
    for _, r in order.iterrows():
        links = []
        for col in r.index:
            if " - " in col and isinstance(r[col], dict):
                hi, lo = col.split(" - ")
                s = r[col]
                rel = s.get("relation", "<")
                links.append({**_row("ordering", r["dataset"], r["regime"],
                                     f"{mc.label(lo)} {rel} {mc.label(hi)}: {mc.label(hi)} − {mc.label(lo)} > 0", s,
                                     PAIRED, "the seeds every ordering member finished",
                                     _paper_gain(r["dataset"], hi, lo)), "_lo": lo})
        position = {m: i for i, m in enumerate(mc.ordering_members())}
        links.sort(key=lambda x: position.get(x["_lo"], 99))
        for x in links:
            del x["_lo"]
        verdicts = {x["verdict"] for x in links}
        chain = CONTRADICTED if CONTRADICTED in verdicts else REPRODUCED if verdicts == {REPRODUCED} else INCONCLUSIVE
        members = mc.ordering_claim([m for m in mc.ordering_members() if pd.notna(r.get(f"{m} mean"))])
        rows.append({**_row("ordering", r["dataset"], r["regime"], f"the whole chain {members}", {}, "every gap "
                            "above", "as the gaps"), "verdict": chain, "n": int(r.get("paired seeds", 0))})
        rows += links
    return rows


def gain_claims(sel: pd.DataFrame, ref_col: str, reference: str) -> list[dict]:
    """MOLERE minus its reference trial (`ref_col`), paired by seed."""
    acc = sel[sel["status"] == "done"].set_index("trial_id")["test/acc"]
    rows = []
    for (dataset, regime), sub in sel.groupby(["dataset", "regime"], sort=False):
        mine = sub[sub["method"] == "molere"]
        if mine.empty:
            continue
        s = paired(mine["trial_id"].map(acc).to_numpy(float), mine[ref_col].map(acc).to_numpy(float))
        rows.append(_row("MOLERE's gain over ERM", dataset, regime, "MOLERE − ERM > 0", s, PAIRED, reference,
                         _paper_gain(dataset, "molere")))
    return rows


def versus_claims(sel: pd.DataFrame, mc: Methods) -> list[dict]:
    """MOLERE against every other method (not the reference, not a control), paired by seed."""
    rows = []
    for (dataset, regime), sub in sel.groupby(["dataset", "regime"], sort=False):
        ours = _accs(sub, "molere")
        if ours.empty:
            continue
        for m in dict.fromkeys(sub["method"]):
            if m == "molere" or mc.is_reference(m) or mc.is_control(m):
                continue
            other = _accs(sub, m)
            common = ours.index.intersection(other.index)
            s = paired(ours[common].to_numpy(float), other[common].to_numpy(float))
            rows.append(_row("MOLERE ≥ every baseline", dataset, regime, f"MOLERE − {mc.label(m)} > 0", s,
                             PAIRED, f"{mc.label(m)} on the same seeds", _paper_gain(dataset, "molere", m)))
    return rows


def margin_claims(sel: pd.DataFrame, mc: Methods) -> list[dict]:
    """Mean paired test-margin delta against ERM > 0 (Figure 3 a, b): per seed the trial's mean delta (against its
    ERM partner, as the report's margin tables), then over seeds."""
    rows = []
    for (dataset, regime), sub in sel.groupby(["dataset", "regime"], sort=False):
        for m in ("molere", "lrw_hard"):
            d = sub[(sub["method"] == m) & (sub["status"] == "done")]["margin_delta_mean"].dropna().to_numpy(float)
            if not len(d):
                continue
            s = _scaled(paired(d, np.zeros_like(d)), 0.01)
            prow = next((r for r in P.result("margins")["mean_delta"] if P.dataset_of(r)["dataset"] == dataset), None)
            paper_v = P.value("margins", prow, "mean") if prow else None
            paper = f"{paper_v.value:+.3f} ({prow})" if paper_v else "—"
            rows.append(_row("margin-delta mean > 0", dataset, regime, f"mean PM({mc.label(m)}) − PM(ERM) > 0", s,
                             ONE_SAMPLE, ERM_REFERENCE, paper))
    return rows


def separation(hard_trial: str, easy_trial: str, erm_trial: str, sweep_dir) -> float:
    """Bin-averaged (over ERM-margin bins both fill) difference of mean margin deltas, Hard minus Easy."""
    ref = test_margins(sweep_dir, erm_trial)
    got = [test_margins(sweep_dir, t) for t in (hard_trial, easy_trial)]
    if ref is None or any(g is None for g in got):
        return np.nan
    bins = [pd.DataFrame(M.bin_by_reference(*M.paired_deltas(*g, *ref))) for g in got]
    both = (bins[0]["count"] > 0) & (bins[1]["count"] > 0)
    return float((bins[0]["mean"] - bins[1]["mean"])[both].mean()) if both.any() else np.nan


def separation_claims(sel: pd.DataFrame, sweep_dir) -> list[dict]:
    """Figure 3 (c, d): per seed, LRW-Hard's and LRW-Easy's deltas against their shared ERM trial, binned."""
    rows = []
    for (dataset, regime), sub in sel.groupby(["dataset", "regime"], sort=False):
        done = sub[sub["status"] == "done"]
        hard, easy = (done[done["method"] == m].set_index("key") for m in ("lrw_hard", "lrw_easy"))
        keys = hard.index.intersection(easy.index)
        seps = [separation(hard.at[k, "trial_id"], easy.at[k, "trial_id"], hard.at[k, "erm_trial"], sweep_dir)
                for k in keys if hard.at[k, "erm_trial"] == easy.at[k, "erm_trial"]]
        seps = np.asarray([x for x in seps if not np.isnan(x)])
        if not len(seps):
            continue
        s = _scaled(paired(seps, np.zeros_like(seps)), 0.01)
        rows.append(_row("Hard − Easy separation across margin bins", dataset, regime,
                         "mean over ERM-margin bins of Δ(LRW-Hard) − Δ(LRW-Easy) > 0", s, ONE_SAMPLE,
                         ERM_REFERENCE, _paper_separation(dataset)))
    return rows


def _paper_separation(dataset: str) -> str:
    f = P.frame("margins")
    for prow in P.paper_rows_of(dataset):
        g = f[f["row"] == prow]
        h, e = (g[g["panel"] == f"per_bin {lab}"]["value"].to_numpy() for lab in ("LRW-Hard", "LRW-Easy"))
        if len(h) and len(h) == len(e):
            return f"≈{(h - e).mean():+.3f} ({prow})"
    return "—"


def verdict_frame(sel: pd.DataFrame, order: pd.DataFrame, sweep_dir, mc: Methods) -> pd.DataFrame:
    """Every testable claim, one row per claim x dataset x regime (x comparison)."""
    ref_col, reference = reference_trial(sel)
    rows = ordering_claims(order, mc) if len(order) else []
    rows += gain_claims(sel, ref_col, reference) + versus_claims(sel, mc) + margin_claims(sel, mc)
    rows += separation_claims(sel, sweep_dir)
    return pd.DataFrame(rows, columns=["claim", "dataset", "regime", "comparison", "verdict", "effect", "lo", "hi",
                                       "n", "p", "test", "reference", "paper"])


def verdict_tables(frame: pd.DataFrame, sel: pd.DataFrame, sweep_dir, mc: Methods) -> list[Table]:
    """The summary (counts per claim), the verdict table, and the scale of each dataset."""
    if frame.empty:
        return []
    digits = {c: (4 if "margin" in c or "separation" in c else 2) for c in frame["claim"].unique()}
    shown = pd.DataFrame({
        "claim": frame["claim"], "dataset": frame["dataset"], "regime": frame["regime"],
        "comparison": frame["comparison"], "verdict": frame["verdict"],
        "effect [95% CI]": [("—" if pd.isna(r.effect) else f"{num(r.effect, digits[r.claim], True)} "
                             f"[{num(r.lo, digits[r.claim], True)}, {num(r.hi, digits[r.claim], True)}]")
                            for r in frame.itertuples()],
        "n": frame["n"].astype(str), "p": [pval(p) for p in frame["p"]], "paper": frame["paper"],
        "test": frame["test"], "reference": frame["reference"]})
    summary = frame.groupby("claim", sort=False)["verdict"].value_counts().unstack(fill_value=0)
    summary = summary.reindex(columns=[REPRODUCED, CONTRADICTED, INCONCLUSIVE], fill_value=0).reset_index()
    scale = store_scale(sel, sweep_dir, mc)
    scale_rows = pd.DataFrame([{"dataset": ds, "scale": scale_line(ds, scale)} for ds in scale])
    caption = ("Judged from this store alone, never from the paper: reproduced = the 95% CI of the effect lies above "
               "0, contradicted = below 0, inconclusive = it spans 0 or fewer than two seeds (or zero variance); "
               "for the '≤' link a CI spanning 0 is consistent with a tie but does not confirm it. Paired t-test: "
               f"{TEST_NAME}; one-sample t-test: the per-seed effects against 0 (the same test with a zero partner). "
               "Effects in accuracy points (margins: margin units). The paper column shows its value for the same "
               "dataset where it has one (Figures 1-3), for reading the scale, not for the verdict.")
    return [Table("verdict_summary", "Reproduction verdict: summary", "Number of settings per verdict.",
                  summary.astype(str)),
            Table("verdict", "Reproduction verdict per claim and setting", caption, shown),
            Table("verdict_scale", "Scale: this store against the paper", "Per dataset: what the trials trained on "
                  "(the ERM trial's training split), beside the paper's setting for that dataset.",
                  scale_rows.astype(str))]
