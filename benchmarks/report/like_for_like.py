"""Like-for-like by construction, shown: realised sizes, counts, budgets and gains against same-data references.

- `header`: the realised train / val / selection / test sizes of every dataset x regime (report.md's top);
- `same_data_table`: each method's gain against the reference that saw the same examples (ERM or ERM on
  train + val, whichever trial's realised counts match the method's), then its gain over ERM; a comparison
  whose counts differ beyond `TOLERANCE` is marked with what differs;
- `counts_table`: the realised counts every trial records (molere.budget);
- `budget_table`: each method's search budget (draws, searched settings, trials).
Why these references: docs/model_selection.md ("Same data").
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.sweep.same_data import POOLED_REFERENCE
from benchmarks.trial.store import RunDir
from .methods import Methods
from .stats import TEST_NAME, paired
from .tables import Table, num, stat

TOLERANCE = 0.02       # relative difference of examples seen or of steps
TV_TOLERANCE = 0.05    # total-variation distance of the class shares of the examples seen


def read_results(frame: pd.DataFrame, sweep_dir) -> dict[str, dict]:
    out = {}
    for tid in frame.loc[frame["status"] == "done", "trial_id"] if len(frame) else ():
        try:
            out[tid] = RunDir(Path(sweep_dir) / "trials" / tid).result()
        except (OSError, ValueError):
            continue
    return out


def counts_of(result: dict | None) -> dict | None:
    return ((result or {}).get("method_info") or {}).get("counts")


def differences(a: dict, b: dict) -> list[str]:
    """What differs beyond TOLERANCE between two trials' realised counts (a relative to b)."""
    out = []
    if b.get("seen"):
        rel = a["seen"] / b["seen"] - 1
        if abs(rel) > TOLERANCE:
            out.append(f"examples seen {rel:+.0%}")
        pa, pb = (np.asarray(c["seen_per_class"], float) for c in (a, b))
        tv = 0.5 * np.abs(pa / max(pa.sum(), 1) - pb / max(pb.sum(), 1)).sum() if len(pa) == len(pb) else 1.0
        if tv > TV_TOLERANCE:
            out.append(f"class shares TV {tv:.2f}")
    if a.get("steps") and b.get("steps"):
        rel = a["steps"] / b["steps"] - 1
        if abs(rel) > TOLERANCE:
            out.append(f"steps {rel:+.0%}")
    return out


def _closeness(a: dict, b: dict) -> tuple:
    return len(differences(a, b)), abs(np.log(max(a["seen"], 1) / max(b["seen"], 1)))


def same_data_pairs(sel: pd.DataFrame, results: dict, mc: Methods, pooled: set[str] = frozenset()) -> pd.DataFrame:
    """Per selected trial: its same-data reference (method, trial) among the selected ERM and erm_train_val
    trials of its seed (the one whose counts match best; without counts, erm_train_val for the methods in
    `pooled`, which the plan gave one) and the differences."""
    refs = {(r.key, r.method): r.trial_id for r in sel.itertuples()
            if mc.is_reference(r.method) or r.method == POOLED_REFERENCE}
    rows = []
    for r in sel.itertuples():
        mine = counts_of(results.get(r.trial_id))
        cands = [(m, t) for (k, m), t in refs.items() if k == r.key and t != r.trial_id]
        scored = [(_closeness(mine, c), m, t) for m, t in cands if mine and (c := counts_of(results.get(t)))]
        if scored:
            _, method, tid = min(scored)
        else:
            prefer = POOLED_REFERENCE if r.method in pooled else None
            method, tid = min(cands, key=lambda c: c[0] != prefer, default=(None, None))
        ref, erm = counts_of(results.get(tid)), counts_of(results.get(r.erm_trial))
        rows.append({"trial_id": r.trial_id, "ref_method": method, "ref_trial": tid,
                     "ref_diff": differences(mine, ref) if mine and ref else None,
                     "erm_diff": differences(mine, erm) if mine and erm else None})
    return pd.DataFrame(rows, columns=["trial_id", "ref_method", "ref_trial", "ref_diff", "erm_diff"])


def _marked(s: dict, diffs) -> str:
    """The paired gain, then what differs between the compared trials (each kind once, its range over seeds)."""
    kinds: dict[str, list[str]] = {}
    for d in (d for ds in diffs if ds for d in ds):
        what, _, value = d.rpartition(" ")
        kinds.setdefault(what, []).append(value)
    number = lambda v: float(v.rstrip("%"))   # noqa: E731
    found = [f"{k} {v[0] if len(set(v)) == 1 else min(v, key=number) + '…' + max(v, key=number)}"
             for k, v in sorted(kinds.items())]
    if any(ds is None for ds in diffs):
        found.append("counts not recorded")
    return stat(s) + (f"; ≠ {', '.join(found)}" if found else "")


def _mean_count(tids, results, key: str) -> str:
    v = [c[key] for t in tids if isinstance(t, str) and (c := counts_of(results.get(t))) and key in c]
    return num(float(np.mean(v)), 0) if v else "n/a"


def same_data_table(sel: pd.DataFrame, results: dict, mc: Methods, pooled: set[str] = frozenset()) -> Table | None:
    """Per dataset x regime x method: gain against its same-data reference first, then over ERM, with marks."""
    if sel.empty:
        return None
    pairs = same_data_pairs(sel, results, mc, pooled).set_index("trial_id")
    done = sel[sel["status"] == "done"].set_index("trial_id")["test/acc"]
    rows = []
    for (dataset, regime, variant), sub in sel.groupby(["dataset", "regime", "variant"], sort=False):
        method = sub["method"].iloc[0]
        if mc.is_reference(method):
            continue
        p = pairs.loc[sub["trial_id"]]
        ref = p["ref_method"].dropna()
        own = sub["trial_id"].map(done).to_numpy(float)
        seen = lambda tids: _mean_count(tids, results, "seen")      # noqa: E731
        steps = lambda tids: _mean_count(tids, results, "steps")    # noqa: E731
        rows.append({"dataset": dataset, "regime": regime, "method": variant,
                     "same-data reference": mc.label(ref.iloc[0]) if len(ref) else "none planned",
                     "gain vs same-data reference (pts) [95% CI], p": _marked(
                         paired(own, p["ref_trial"].map(done).to_numpy(float)), p["ref_diff"]),
                     "gain over ERM (pts) [95% CI], p": _marked(
                         paired(own, sub["erm_trial"].map(done).to_numpy(float)), p["erm_diff"]),
                     "examples seen: method / reference / ERM": " / ".join(
                         seen(x) for x in (sub["trial_id"], p["ref_trial"], sub["erm_trial"])),
                     "steps: method / reference / ERM": " / ".join(
                         steps(x) for x in (sub["trial_id"], p["ref_trial"], sub["erm_trial"]))})
    if not rows:
        return None
    return Table("same_data", "Gains against the reference that saw the same data",
                 "Same-data reference: of ERM (train split) and ERM on train + val pooled, the selected trial whose "
                 "realised counts (distinct examples trained or meta-learned on, their class shares, classifier "
                 "steps) match the method's; the gain against it comes first, the gain over ERM second. Paired by "
                 f"seed, accuracy points, 95% CI, {TEST_NAME}. '≠ ...': the counts of that comparison differ by more "
                 f"than {TOLERANCE:.0%} (examples seen, steps) or their class shares by a TV distance over "
                 f"{TV_TOLERANCE} — the gain "
                 "then includes that difference. Counts: means over seeds (docs/model_selection.md).",
                 pd.DataFrame(rows))


def counts_table(sel: pd.DataFrame, results: dict) -> Table | None:
    """The realised counts of every dataset x regime x method (means over its finished seeds)."""
    rows = []
    for (dataset, regime, variant), sub in sel.groupby(["dataset", "regime", "variant"], sort=False):
        got = [c for t in sub["trial_id"] if (c := counts_of(results.get(t)))]
        if not got:
            continue
        m = lambda k: num(float(np.mean([c.get(k, np.nan) for c in got])), 0)   # noqa: E731
        per = np.mean([c["train_per_class"] for c in got], axis=0)
        rows.append({"dataset": dataset, "regime": regime, "method": variant, "seeds": str(len(got)),
                     "trained on": m("train"), "per class (min–max)": f"{per.min():.0f}–{per.max():.0f}",
                     "meta / validation": m("meta"), "examples seen": m("seen"), "selection": m("selection"),
                     "steps": m("steps"), "budget": "/".join(sorted({c.get("budget", "?") for c in got}))})
    if not rows:
        return None
    return Table("counts", "Realised counts: what each method trained and meta-learned on, and its steps",
                 "Recorded by every trial (molere.budget): examples its classifier trains on (observed labels; the "
                 "smallest and largest class), its meta / validation set, the distinct examples of both, the "
                 "model-selection split (never trained on) and classifier steps; budget steps = every method takes "
                 "the reference's steps. Means over finished seeds.", pd.DataFrame(rows))


def budget_table(df: pd.DataFrame, plan: list[dict], mc: Methods) -> Table | None:
    """Per dataset x method: how many draws it got, what was searched, its trials."""
    spaces = {(e["labels"]["dataset"], e["labels"]["method"]): e.get("search_space") or {} for e in plan}
    rows = []
    for (dataset, method), sub in df.groupby(["dataset", "method"], sort=False):
        own = sub[~sub["reference_only"].astype(bool)]
        part = own if len(own) else sub
        space = spaces.get((dataset, method), {})
        rows.append({"dataset": dataset, "method": method, "label": mc.label(method),
                     "draws": str(part["hparams_id"].nunique()),
                     "searched": ", ".join(sorted(space)) or "nothing (base configuration)",
                     "trials done / planned": f"{int((part['status'] == 'done').sum())} / {len(part)}",
                     "planned as": "a reference of other methods" if not len(own) else "listed in the sweep"})
    if not rows:
        return None
    return Table("budgets", "Tuning budget of every method",
                 "Draws: configurations per method (draw 0 = the base configuration; training settings are common "
                 "candidates of every method, a method's own hyperparameters are searched within the same number "
                 "of draws; docs/model_selection.md); each draw runs on every seed. A method planned only as a "
                 "reference of others gets the draws of the methods it serves.", pd.DataFrame(rows))


def header(sel: pd.DataFrame, results: dict) -> list[str]:
    """One line per dataset x regime: the realised sizes of train / val / selection / test."""
    lines, seen = [], set()
    for r in sel.itertuples():
        info = (results.get(r.trial_id) or {}).get("info") or {}
        if (r.dataset, r.regime) in seen or "sizes" not in info:
            continue
        seen.add((r.dataset, r.regime))
        z = info["sizes"]
        extra = "".join(f", {k[5:]} {v}" for k, v in z.items() if k.startswith("test:"))
        lines.append(f"Realised sizes, {r.dataset} / {r.regime}: train {z['train']}, val {z['val']} "
                     f"({info.get('val_split', '?')}), train + val {z['train'] + z['val']}, selection "
                     f"{z['selection']}, test {z['test']}{extra}")
    return lines


def _plan(sweep_dir) -> list[dict]:
    try:
        plan = json.loads((Path(sweep_dir) / "plan.json").read_text())
    except (OSError, ValueError):
        return []
    return [e for e in plan if isinstance(e, dict)] if isinstance(plan, list) else []


def pooled_methods(sweep_dir) -> set[str]:
    """The methods the plan gave a same-data reference (erm_train_val): those that learn from val."""
    return {e["labels"]["method"] for e in _plan(sweep_dir) if e.get("same_data_trial_id") and "labels" in e}


def tables(sel: pd.DataFrame, df: pd.DataFrame, sweep_dir, mc: Methods) -> tuple[list[str], list[Table]]:
    """(header lines, [same-data gains, counts, budgets]) of the report."""
    if sel.empty:
        return [], []
    results = read_results(sel, sweep_dir)
    plan, pooled = _plan(sweep_dir), pooled_methods(sweep_dir)
    found = (same_data_table(sel, results, mc, pooled), counts_table(sel, results), budget_table(df, plan, mc))
    return header(sel, results), [t for t in found if t is not None]
