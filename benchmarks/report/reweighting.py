"""Report tables on what the reweighting and the split selection actually did (from each trial's result):

- `reweighting`: "does the reweighting do anything?" — weight spread, rank correlations, weight mass on
  mislabelled examples and the meta-network's displacement (`molere.diagnostics`), with a flag for
  effectively constant weights;
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

from molere.diagnostics import CONSTANT_REL_STD, UNTRAINED_DISPLACEMENT

from benchmarks.trial.store import RunDir
from .tables import Table, num


def _results(df: pd.DataFrame, sweep_dir: Path) -> dict[str, dict]:
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


def reweighting_table(df: pd.DataFrame, results: dict) -> Table | None:
    rows = []
    for dataset, regime, variant, diags in _cells(df, results, lambda r: r.get("reweighting")):
        m = lambda k: _mean(d.get(k) for d in diags)   # noqa: E731
        const = sum(bool(d.get("constant")) for d in diags)
        still = sum(d.get("meta_displacement", np.inf) < UNTRAINED_DISPLACEMENT for d in diags)
        noisy = "n/a (no label noise)" if np.isnan(m("noisy_fraction")) else \
            f"{num(m('noisy_over_clean_weight'))} ({num(100 * m('noisy_weight_mass'), 1)}% of mass, " \
            f"{num(100 * m('noisy_fraction'), 1)}% of examples)"
        has_phi = any("meta_displacement" in d for d in diags)   # recorded weights (MBR, JTT, ...) have no φ
        rows.append({"dataset": dataset, "regime": regime, "method": variant, "seeds": str(len(diags)),
                     "weight rel. std": num(m("weight_rel_std"), 3), "ESS": num(m("weight_ess"), 3),
                     "min / max (mean 1)": f"{num(m('weight_min'))} / {num(m('weight_max'))}",
                     "raw mean": num(m("weight_raw_mean"), 3),
                     "ρ(w, loss)": num(m("spearman_loss")), "ρ(w, ERM margin)": num(m("spearman_erm_margin")),
                     "noisy / clean weight": noisy,
                     "φ displacement": f"{m('meta_displacement'):.2e}" if has_phi else "n/a (no weight network)",
                     "effectively constant": f"{'yes' if const else 'no'} ({const}/{len(diags)} seeds)",
                     "φ untrained": f"{'yes' if still else 'no'} ({still}/{len(diags)} seeds)" if has_phi else "n/a"})
    if not rows:
        return None
    return Table("reweighting", "Does the reweighting do anything?",
                 "Weights of the final weight network on the training split (methods without one: the weight each "
                 "example last trained with, JTT's multiplicity, RHO-loss's selection rate), rescaled to mean 1: relative "
                 "std, effective sample size fraction (Σw)²/(nΣw²), min/max; raw mean = their scale before "
                 "rescaling; Spearman ρ with the final loss and with the ERM margin (n/a without an ERM reference); "
                 "mean weight of mislabelled over clean examples; φ displacement = ‖φ_T − φ_0‖/‖φ_0‖. Means over "
                 f"seeds. 'Effectively constant': relative std < {CONSTANT_REL_STD} — the weighted gradient then "
                 "differs from ERM's by under 5% of one example's gradient, below ERM's own minibatch noise "
                 f"(molere.diagnostics). 'φ untrained': displacement < {UNTRAINED_DISPLACEMENT:g} — φ still computes its "
                 "initial function, so any spread is the random initialisation's, not learned.", pd.DataFrame(rows))


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
                 "expectation); class TV distance to the pool's class shares of the materialised split and of one "
                 "ranking over the pool; overlap = |V_t ∩ V_t−1| / |V_t|. Means over seeds.", pd.DataFrame(rows))


def diagnostic_tables(df: pd.DataFrame, sweep_dir) -> list[Table]:
    """The three tables above (those with data)."""
    if df.empty:
        return []
    results = _results(df, Path(sweep_dir))
    tables = (reweighting_table(df, results), validation_set_table(df, results), molere_split_table(df, results))
    return [t for t in tables if t is not None]
