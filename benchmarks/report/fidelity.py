"""Baseline fidelity (docs/results/fidelity.md): each method's own paper's headline claim, measured by the
fidelity sweeps, beside the paper's number, with a verdict.

    python -m benchmarks.report.fidelity results/fidelity results/fidelity_train_twice \
        --out docs/results/fidelity.md

The claims are data (fidelity_claims.yaml, one entry per claim); each names its store, regime and measure.
Verdict per dataset: "reproduced" when the 95% CI of the measured effect lies above 0; "not reproduced" when
its mean is at or below 0, "not reproduced (CI includes 0)" when the mean is positive but the CI is not;
"not applicable at this scale" when the protocol's precondition fails (ERM does not memorise the noisy
labels) or fewer than two seeds are paired.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats as sps

from benchmarks.trial.store import RunDir
from .methods import Methods
from .collect import collect

CLAIMS = Path(__file__).with_name("fidelity_claims.yaml")
MEMORISED = 0.95   # ERM's accuracy on the noisy training labels that counts as memorising them


def load_claims(path: Path = CLAIMS) -> dict[str, dict]:
    return yaml.safe_load(path.read_text())


def t_interval(d: np.ndarray) -> tuple[float, float, float, int]:
    """Mean, 95% t-interval (NaN below two values) and n of paired differences."""
    d = d[~np.isnan(d)]
    n = len(d)
    if n < 2:
        return (float(d.mean()) if n else np.nan), np.nan, np.nan, n
    half = sps.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half), n


def _gain(sub: pd.DataFrame, df: pd.DataFrame, claim: dict) -> np.ndarray:
    """Test-accuracy gain over ERM of the same seed, in points."""
    return sub["gain_over_erm_pts"].to_numpy(float)


def _margin_delta(sub: pd.DataFrame, df: pd.DataFrame, claim: dict) -> np.ndarray:
    """Mean paired test-margin delta vs ERM of the same seed (minus the `versus` method's, when given)."""
    own = sub.set_index("seed")["margin_delta_mean"]
    if not claim.get("versus"):
        return own.to_numpy(float)
    other = df[(df["method"] == claim["versus"]) & (df["dataset"] == sub["dataset"].iloc[0])
               & (df["regime"] == claim["regime"]) & (df["status"] == "done")].set_index("seed")["margin_delta_mean"]
    seeds = own.index.intersection(other.index)
    return (own[seeds] - other[seeds]).to_numpy(float)


MEASURES = {"gain_over_erm": (_gain, "gain over ERM (points)", 2),
            "margin_delta": (_margin_delta, "mean test-margin delta", 4)}


# ---- spurious-correlation claims (sweeps/fidelity_groups.yaml) ------------------------------------------
def _metric_gain_over_erm(sub: pd.DataFrame, df: pd.DataFrame, metric: str) -> np.ndarray:
    """`metric` (a fraction stored per trial) minus its ERM partner's of the same seed, in points."""
    if metric not in df:
        return np.full(len(sub), np.nan)
    value = df.set_index("trial_id")[metric]
    return 100 * (sub["trial_id"].map(value) - sub["erm_trial"].map(value)).to_numpy(float)


def _worst_group_gain(sub: pd.DataFrame, df: pd.DataFrame, claim: dict) -> np.ndarray:
    """Worst-group test accuracy (`test/worst_group_acc`) gain over ERM of the same seed, in points."""
    return _metric_gain_over_erm(sub, df, "test/worst_group_acc")


MEASURES["worst_group_gain"] = (_worst_group_gain, "worst-group test-accuracy gain over ERM (points)", 2)


def erm_memorises(store: Path, df: pd.DataFrame, dataset: str, regime: str) -> tuple[bool, str]:
    erm = df[(df["method"] == "erm") & (df["dataset"] == dataset) & (df["regime"] == regime) & (df["status"] == "done")]
    fits = [RunDir(store / "trials" / t).result()["metrics"].get("train/acc_observed", np.nan) for t in erm["trial_id"]]
    ok = len(fits) > 0 and all(f >= MEMORISED for f in fits)
    return ok, "ERM fits " + ", ".join(f"{f:.3f}" for f in fits) + " of the noisy training labels"


def verdict(mean: float, lo: float, n: int) -> str:
    if n < 2 or np.isnan(mean):
        return "not applicable at this scale (fewer than 2 paired seeds)"
    if lo > 0:
        return "reproduced"
    return "not reproduced" if mean <= 0 else "not reproduced (CI includes 0)"


def rows_for(name: str, claim: dict, store: Path, df: pd.DataFrame, mc: Methods) -> list[dict]:
    fn, what, digits = MEASURES[claim["measure"]]
    out = []
    sel = df[(df["method"] == claim["method"]) & (df["regime"] == claim["regime"])]
    for dataset, sub in sel.groupby("dataset", sort=False):
        done = sub[sub["status"] == "done"]
        mean, lo, hi, n = t_interval(fn(done, df, claim)) if len(done) else (np.nan, np.nan, np.nan, 0)
        v = verdict(mean, lo, n)
        note = ""
        if claim.get("requires") == "erm_memorises":
            ok, note = erm_memorises(store, df, dataset, claim["regime"])
            v = v if ok else "not applicable at this scale (ERM does not memorise)"
        bad = {s: int(c) for s, c in sub["status"].value_counts().items() if s != "done"}
        f = f"{{:+.{digits}f}}"
        measured = f"{f.format(mean)} [{f.format(lo)}, {f.format(hi)}] (n={n})" if n >= 2 else \
            (f"{f.format(mean)} (n={n})" if n else "no finished seeds")
        out.append({"claim": name, "method": mc.label(sub["variant"].iloc[0]) + (
                        f" vs {mc.card(claim['versus']).label}" if claim.get("versus") else ""),
                    "dataset": dataset, "measure": what, "measured": measured + "".join(
                        f"; {c} {s}" for s, c in bad.items()), "verdict": v, "note": note})
    if sel.empty:
        out.append({"claim": name, "method": claim["method"], "dataset": "—", "measure": what,
                    "measured": f"not run ({store.name} has no {claim['method']} trials)", "verdict": "not measured",
                    "note": ""})
    return out


def render(stores: list[Path], claims: dict[str, dict]) -> str:
    frames = {s.name: (s, *collect(s)) for s in stores}   # each store with its own cards
    lines = ["# Baseline fidelity (generated)", "",
             "Each baseline's own paper's headline claim, re-measured at CPU scale in its own paper's protocol "
             "(docs/protocol.md), beside the paper's number. Effects are paired by seed: mean with 95% t-interval "
             "over seeds. Verdicts: reproduced (CI above 0), not reproduced, not applicable at this scale. "
             "Generated by `python -m benchmarks.report.fidelity " + " ".join(str(s) for s in stores) + "`; claims "
             "and paper numbers: `benchmarks/report/fidelity_claims.yaml`.", "",
             "| claim | method (protocol) | paper | paper's result | dataset | measured here | verdict |",
             "|---|---|---|---|---|---|---|"]
    notes = []
    for name, claim in claims.items():
        if claim["store"] not in frames:
            lines.append(f"| {name} | {claim['method']} | {claim['paper']} | {claim['paper_result']} | — | "
                         f"store {claim['store']} not given | not measured |")
            continue
        store, df, mc = frames[claim["store"]]
        rows = rows_for(name, claim, store, df, mc)
        for r in rows:
            lines.append(f"| {name}: {claim['claim']} | {r['method']} | {claim['paper']} | {claim['paper_result']} | "
                         f"{r['dataset']} | {r['measure']}: {r['measured']} | **{r['verdict']}** |")
            if r["note"]:
                notes.append(f"- {name} / {r['dataset']}: {r['note']}")
    return "\n".join(lines + [""] + notes + [""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.report.fidelity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stores", nargs="+", type=Path, help="result stores of the fidelity sweeps (results/<name>)")
    p.add_argument("--claims", type=Path, default=CLAIMS, help="claims file (default: the shipped one)")
    p.add_argument("--out", type=Path, default=None, help="Markdown file (default: print)")
    a = p.parse_args(argv)
    for s in a.stores:
        if not (s / "plan.json").exists():
            print(f"benchmarks.report.fidelity: error: {s}: not a sweep directory (plan.json missing)")
            return 2
    text = render(a.stores, load_claims(a.claims))
    if a.out is None:
        print(text)
    else:
        a.out.write_text(text)
        print(f"{a.out}: {text.count('**reproduced**')} reproduced of {text.count('| **')} measured rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
