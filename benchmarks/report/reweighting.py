"""Report tables on what the reweighting and the split selection actually did (from each trial's result):

- `reweighting`: "does the reweighting do anything?" — one verdict per method from what φ learned (learned /
  moved but constant / untrained), with the numbers behind it (`molere.diagnostics`);
- `validation_sets`: the train-twice validation sets' share of official-val, ERM-misclassified and
  mislabelled examples against the pool's base rates, under each ranking at hand;
- `molere_splits`: MOLERE's splits — hardness under the classifier that trains on them, class balance
  before/after, overlap from one split to the next.
Every number is a mean over the finished seeds of a dataset x regime x method cell.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scipy import stats

from molere.diagnostics import CONSTANT_REL_STD, LEARNED_CHANGE, SAME_RANKING, VERDICTS

from benchmarks.trial.store import RunDir
from .tables import Table, num


def trial_results(df: pd.DataFrame, sweep_dir: Path) -> dict[str, dict]:
    """result.json of every done trial of `df`, by trial id (unreadable ones left out)."""
    out = {}
    for tid in df.loc[df["status"] == "done", "trial_id"]:
        try:
            out[tid] = RunDir(Path(sweep_dir) / "trials" / tid).result()
        except (OSError, ValueError):
            continue
    return out


def _mean(values) -> float:
    v = np.array([x for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


def _cells(df: pd.DataFrame, results: dict, pick):
    """(dataset, regime, variant, [picked value of every finished trial that has one])."""
    for (dataset, regime, variant), sub in df.groupby(["dataset", "regime", "variant"], sort=False):
        got = [v for t in sub["trial_id"] if t in results and (v := pick(results[t])) is not None]
        if got:
            yield dataset, regime, variant, got


def verdict_text(diags: list[dict]) -> str:
    """'learned (3/3 seeds)' or 'untrained 2/3, learned 1/3' (older trials without one: n/a)."""
    got = [d["verdict"] for d in diags if d.get("verdict")]
    if not got:
        return "n/a (no initial weights recorded)"
    counts = {v: got.count(v) for v in VERDICTS if got.count(v)}
    if len(counts) == 1:
        return f"{got[0]} ({len(got)}/{len(diags)} seeds)"
    return ", ".join(f"{v} {n}/{len(diags)}" for v, n in counts.items())


def _ratio(diags: list[dict]) -> str:
    """Mislabelled / clean mean weight with a 95% t-interval over seeds, only for label-dependent weights."""
    if not any(d.get("label_dependent", True) for d in diags):
        return "n/a (φ cannot see the label)"
    v = np.array([d["noisy_over_clean_weight"] for d in diags if d.get("noisy_over_clean_weight") is not None])
    if not len(v):
        return "n/a (no label noise)"
    mass = _mean(d.get("noisy_weight_mass") for d in diags)
    if len(v) < 2:
        return f"{num(v.mean())} ({num(100 * mass, 1)}% of mass; n=1)"
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    ci = f"[{num(v.mean() - half)}, {num(v.mean() + half)}]"
    return f"{num(v.mean())} {ci} ({num(100 * mass, 1)}% of mass; n={len(v)})"


def reweighting_table(df: pd.DataFrame, results: dict) -> Table | None:
    rows = []
    for dataset, regime, variant, diags in _cells(df, results, lambda r: r.get("reweighting")):
        m = lambda k: _mean(d.get(k) for d in diags)   # noqa: E731
        has_phi = any("meta_displacement" in d for d in diags)   # recorded weights (MBR, JTT, ...) have no φ
        rows.append({"dataset": dataset, "regime": regime, "method": variant, "seeds": str(len(diags)),
                     "verdict": verdict_text(diags), "ρ(w₀, w_T)": num(m("spearman_init_final"), 3),
                     "change d / scale r": f"{num(m('weight_change'), 3)} / "
                                           f"{num(m('weight_scale_change'), 3, sign=True)}",
                     "rel. std initial → final": f"{num(m('initial_rel_std'), 3)} → {num(m('weight_rel_std'), 3)}",
                     "ESS": num(m("weight_ess"), 3),
                     "min / max (mean 1)": f"{num(m('weight_min'))} / {num(m('weight_max'))}",
                     "raw mean": num(m("weight_raw_mean"), 3),
                     "ρ(w, loss)": num(m("spearman_loss")), "ρ(w, ERM margin)": num(m("spearman_erm_margin")),
                     "mislabelled / clean weight [95% CI]": _ratio(diags),
                     "φ displacement": f"{m('meta_displacement'):.2e}" if has_phi else "n/a (no weight network)"})
    if not rows:
        return None
    return Table("reweighting", "Does the reweighting do anything? One verdict per method, from what φ learned",
                 "The training split weighted by the initial φ₀ and the final φ_T (final classifier; methods without "
                 "a weight network: the weight each example last trained with, JTT's multiplicity, RHO-loss's "
                 "selection rate, no verdict): Spearman "
                 "ρ(w₀, w_T), the change d = RMS of the difference of the mean-1 weights and the change of scale "
                 f"r = mean(w_T)/mean(w₀) − 1. Verdict per seed: 'untrained' when d and |r| < {LEARNED_CHANGE} and "
                 f"ρ ≥ {SAME_RANKING} (φ still computes its random initial function, whatever its spread); else "
                 "'moved but constant' when the final relative std is below "
                 f"{CONSTANT_REL_STD} (uniform weights: ERM); else 'learned'. Both 0.05 bounds: below them the "
                 "weighted gradient differs by under 5% of one example's gradient, less than ERM's minibatch noise "
                 "(molere.diagnostics). ESS = (Σw)²/(nΣw²); Spearman ρ with the final loss and the ERM margin (n/a "
                 "without an ERM reference); mislabelled / clean mean weight only where the weight can depend on "
                 "the label (e.g. MWN's φ(loss), not LRW's φ(x)), with a 95% t-interval over seeds; φ displacement "
                 "= ‖φ_T − φ_0‖/‖φ_0‖. Means over seeds.", pd.DataFrame(rows))


def validation_set_table(df: pd.DataFrame, results: dict) -> Table | None:
    rows = []
    pick = lambda r: (r.get("method_info") or {}) if "val_official_val_share" in (r.get("method_info") or {}) \
        else None   # noqa: E731
    for dataset, regime, variant, infos in _cells(df, results, pick):
        m = lambda k: _mean(i.get(k) for i in infos)   # noqa: E731
        by = {}
        for i in infos:
            for rk, v in (i.get("val_official_val_share_by_ranking") or {}).items():
                by.setdefault(rk, []).append(v)
        shares = ", ".join(f"{rk}: {num(100 * _mean(v), 1)}%" for rk, v in sorted(by.items()))
        rows.append({"dataset": dataset, "regime": regime, "method": variant, "seeds": str(len(infos)),
                     "ranking": ", ".join(sorted({i.get("ranking", "erm_on_train") for i in infos})),
                     "official val (%)": f"{num(100 * m('val_official_val_share'), 1)} "
                                         f"(pool {num(100 * m('pool_official_val_share'), 1)})",
                     "official val by ranking": shares,
                     "ERM-misclassified (%)": f"{num(100 * m('val_erm_misclassified_share'), 1)} "
                                              f"(pool {num(100 * m('pool_erm_misclassified_share'), 1)})",
                     "mislabelled (%)": f"{num(100 * m('val_noise_fraction'), 1)} "
                                        f"(pool {num(100 * m('pool_noise_fraction'), 1)})"})
    if not rows:
        return None
    return Table("validation_sets", "Train-twice validation sets: what they hold",
                 "Share of the selected δ fraction that is official-val, misclassified by the ranking ERM (margin < 0) "
                 "and mislabelled, against the pool's rate in parentheses; 'by ranking': the official-val share each "
                 "available ranking gives (crossfit = out-of-fold ERM margins, the default; erm_on_train = ERM on the "
                 "official train split, the earlier procedure). Means over seeds.", pd.DataFrame(rows))


def _split_summary(result: dict) -> dict | None:
    hist = (result.get("method_info") or {}).get("split_history") or []
    post = [h for h in hist if not h.get("split/warmup", 1.0)]
    if not post:
        return None
    first = post[0]
    overlaps = [h["split/overlap_prev"] for h in post[1:] if "split/overlap_prev" in h]
    return {**first, "overlap_later": _mean(overlaps), "overlap_last": overlaps[-1] if overlaps else np.nan}


def molere_split_table(df: pd.DataFrame, results: dict) -> Table | None:
    rows = []
    for dataset, regime, variant, sums in _cells(df, results, _split_summary):
        m = lambda k: _mean(s.get(k) for s in sums)   # noqa: E731
        rows.append({"dataset": dataset, "regime": regime, "method": variant, "seeds": str(len(sums)),
                     "first split misclassified (%)": f"{num(100 * m('split/val_misclassified'), 1)} "
                                                      f"(pool {num(100 * m('split/pool_misclassified'), 1)})",
                     "… by ERM out-of-fold (%)": f"{num(100 * m('split/val_erm_oof_misclassified'), 1)} "
                                                 f"(pool {num(100 * m('split/pool_erm_oof_misclassified'), 1)})",
                     "first split margin": f"{num(m('split/val_margin'), 3)} (pool {num(m('split/pool_margin'), 3)})",
                     "first split mislabelled (%)": f"{num(100 * m('split/val_noisy'), 1)} "
                                                    f"(pool {num(100 * m('split/pool_noisy'), 1)})",
                     "class TV after / one ranking": f"{num(m('split/val_class_tv'), 3)} / "
                                                     f"{num(m('split/val_class_tv_one_ranking'), 3)}",
                     "overlap: first vs warm-up": num(m("split/overlap_prev"), 3),
                     "overlap: later splits (mean / last)": f"{num(m('overlap_later'), 3)} / {num(m('overlap_last'), 3)}"})
    if not rows:
        return None
    return Table("molere_splits", "MOLERE's splits: hardness, balance, overlap",
                 "First post-warm-up split scored by the classifier that then trains on it (pool = a random split's "
                 "expectation) and, independently, by the ERM reference's out-of-fold margins (every pool example "
                 "scored by an ERM that never trained on it; n/a without the stored ERM run); class TV distance to "
                 "the pool's class shares of the materialised split and of one "
                 "ranking over the pool; overlap = |V_t ∩ V_t−1| / |V_t|. Means over seeds.", pd.DataFrame(rows))


def diagnostic_tables(df: pd.DataFrame, sweep_dir) -> list[Table]:
    """The three tables above (those with data)."""
    if df.empty:
        return []
    results = trial_results(df, Path(sweep_dir))
    tables = (reweighting_table(df, results), validation_set_table(df, results), molere_split_table(df, results))
    return [t for t in tables if t is not None]
