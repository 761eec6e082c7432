"""Baseline fidelity (docs/results/fidelity.md): each method's own paper's headline claim, measured by the
fidelity sweeps, beside the paper's number, with a verdict.

    python -m benchmarks.report.fidelity results/fidelity results/fidelity_train_twice \
        results/fidelity_baselines results/fidelity_groups --out docs/results/fidelity.md

The claims are data (fidelity_claims.yaml, one entry per claim); each names its store, regime and measure
(gain over ERM, test-margin delta, worst-group gain, or epochs to ERM's best test accuracy), or why it cannot be measured at
this scale (`not_applicable`: a row with that verdict, no store needed).
Verdict per dataset: "reproduced" when the 95% CI of the measured effect lies above 0; "not reproduced" when
its mean is at or below 0, "not reproduced (CI includes 0)" when the mean is positive but the CI is not;
"not applicable at this scale" when the protocol's precondition fails (ERM does not memorise the noisy
labels) or fewer than two seeds are paired; "not reproduced (k of n seeds diverged)" when any seed diverged
(the guard stopped it: a method that falls apart does not reproduce a gain, docs/guard.md).
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


def _gain_versus(sub: pd.DataFrame, df: pd.DataFrame, claim: dict) -> np.ndarray:
    """Test-accuracy difference to the `versus` method of the same seed, in points (both against one ERM)."""
    own = sub.set_index("seed")["gain_over_erm_pts"]
    other = df[(df["method"] == claim["versus"]) & (df["dataset"] == sub["dataset"].iloc[0])
               & (df["regime"] == claim["regime"]) & (df["status"] == "done")].set_index("seed")["gain_over_erm_pts"]
    seeds = own.index.intersection(other.index)
    return (own[seeds] - other[seeds]).to_numpy(float)


def epoch_accuracies(rows: list[dict]) -> list[tuple[int, float]]:
    """(epoch, test accuracy) of every metrics.jsonl row that evaluated the test split."""
    return [(int(r["epoch"]), float(r["test/acc"])) for r in rows if r.get("test/acc") is not None]


def epochs_to_target(reference: list[dict], method: list[dict]) -> tuple[float, int, int, int]:
    """(target, reference's epochs, method's epochs, epochs run) per RHO-loss's speed-up (official
    notebooks/figures.ipynb, compute_speedup): the target is the reference's best test accuracy, the
    reference's epochs are the first epoch at it, the method's the first epoch strictly above it;
    a method that never gets above it counts as the epochs run + 1."""
    ref, own = epoch_accuracies(reference), epoch_accuracies(method)
    if not ref or not own:
        raise ValueError("no per-epoch test accuracy (train.eval_every) in metrics.jsonl")
    target = max(a for _, a in ref)
    ref_epoch = next(e for e, a in ref if a >= target)
    ran = max(e for e, _ in own)
    own_epoch = next((e for e, a in own if a > target), ran + 1)
    return target, ref_epoch, own_epoch, ran


def _targets(sub: pd.DataFrame, claim: dict) -> list[tuple[int, float, int, int, int, float]]:
    """(seed, *epochs_to_target, the method's best test accuracy) of each finished trial against its ERM
    partner of the same seed."""
    runs, out = Path(claim["_store"]) / "trials", []
    for seed, tid, erm in zip(sub["seed"], sub["trial_id"], sub["erm_trial"]):
        if isinstance(erm, str):
            own = RunDir(runs / tid).metrics()
            out.append((int(seed), *epochs_to_target(RunDir(runs / erm).metrics(), own),
                        max(a for _, a in epoch_accuracies(own))))
    return out


def _steps_to_target(sub: pd.DataFrame, df: pd.DataFrame, claim: dict) -> np.ndarray:
    """ERM's epochs to its best test accuracy minus the method's epochs to exceed it (positive: faster)."""
    return np.array([ref - own for _, _, ref, own, _, _ in _targets(sub, claim)], float)


def _steps_note(sub: pd.DataFrame, df: pd.DataFrame, claim: dict) -> str:
    parts = [f"seed {s}: target {t:.3f}, ERM epoch {r}, method " + (f"epoch {o}" if o <= n else f"not above it in "
             f"{n} epochs (counted {o}; its best {b:.3f})") for s, t, r, o, n, b in _targets(sub, claim)]
    return "; ".join(parts)


def _metric_gain_over_erm(sub: pd.DataFrame, df: pd.DataFrame, metric: str) -> np.ndarray:
    """`metric` (a fraction stored per trial) minus its ERM partner's of the same seed, in points."""
    if metric not in df:
        return np.full(len(sub), np.nan)
    value = df.set_index("trial_id")[metric]
    return 100 * (sub["trial_id"].map(value) - sub["erm_trial"].map(value)).to_numpy(float)


def _worst_group_gain(sub: pd.DataFrame, df: pd.DataFrame, claim: dict) -> np.ndarray:
    """Worst-group test accuracy (`test/worst_group_acc`) gain over ERM of the same seed, in points."""
    return _metric_gain_over_erm(sub, df, "test/worst_group_acc")


MEASURES = {"gain_over_erm": (_gain, "gain over ERM (points)", 2),
            "margin_delta": (_margin_delta, "mean test-margin delta", 4),
            "gain_over_versus": (_gain_versus, "test-accuracy difference (points)", 2),
            "steps_to_target": (_steps_to_target, "epochs to ERM's best test accuracy, ERM minus method", 1),
            "worst_group_gain": (_worst_group_gain, "worst-group test-accuracy gain over ERM (points)", 2)}
NOTES = {"steps_to_target": _steps_note}   # per-row notes a measure adds under the table


def erm_memorises(store: Path, df: pd.DataFrame, dataset: str, regime: str) -> tuple[bool, str]:
    erm = df[(df["method"] == "erm") & (df["dataset"] == dataset) & (df["regime"] == regime) & (df["status"] == "done")]
    fits = [RunDir(store / "trials" / t).result()["metrics"].get("train/acc_observed", np.nan) for t in erm["trial_id"]]
    ok = len(fits) > 0 and all(f >= MEMORISED for f in fits)
    return ok, "ERM fits " + ", ".join(f"{f:.3f}" for f in fits) + " of the noisy training labels"


def verdict(mean: float, lo: float, n: int, diverged: int = 0, planned: int = 0) -> str:
    """The claim's verdict from the paired effect; a seed that diverged fails the claim whatever the others say."""
    if diverged:
        return f"not reproduced ({diverged} of {planned} seeds diverged)"
    if n < 2 or np.isnan(mean):
        return "not applicable at this scale (fewer than 2 paired seeds)"
    if lo > 0:
        return "reproduced"
    return "not reproduced" if mean <= 0 else "not reproduced (CI includes 0)"


def rows_for(name: str, claim: dict, store: Path, df: pd.DataFrame, mc: Methods) -> list[dict]:
    fn, what, digits = MEASURES[claim["measure"]]
    out = []
    sel = df[(df["method"] == claim["method"]) & (df["regime"] == claim["regime"])]
    for (dataset, _), sub in sel.groupby(["dataset", "variant"], sort=False):   # a variant (its hparams) per row
        done = sub[sub["status"] == "done"]
        mean, lo, hi, n = t_interval(fn(done, df, {**claim, "_store": store})) if len(done) else \
            (np.nan, np.nan, np.nan, 0)
        v = verdict(mean, lo, n, int((sub["status"] == "diverged").sum()), len(sub))
        note = NOTES[claim["measure"]](done, df, {**claim, "_store": store}) if claim["measure"] in NOTES else ""
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


def not_applicable_row(name: str, claim: dict) -> str:
    """The row of a claim this harness cannot measure at this scale (field `not_applicable`: the reason)."""
    return (f"| {name}: {claim['claim']} | {_method_label(claim['method'])} | {claim['paper']} | "
            f"{claim['paper_result']} | — | not measured | **not applicable at this scale "
            f"({claim['not_applicable']})** |")


def _method_label(method: str) -> str:
    try:
        return Methods().card(method).label
    except (KeyError, ValueError):
        return method


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
        if claim.get("not_applicable"):
            lines.append(not_applicable_row(name, claim))
            continue
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
