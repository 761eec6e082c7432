"""Paired test-margin deltas (method - ERM on the same examples, matched by id), pooled over seeds, and
their binning by the ERM margin (10 bins of width 0.2) — the data behind the margin figures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from molere import margins as M

from .methods import Methods
from .collect import test_margins


def margin_deltas(df: pd.DataFrame, sweep_dir: Path, mc: Methods) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """{(dataset, regime, variant): (ERM margins, deltas)} pooled over the seeds where both runs finished."""
    done = set(df.loc[df["status"] == "done", "trial_id"])
    out: dict[tuple, list] = {}
    for r in df.itertuples():
        if mc.is_reference(r.method) or r.trial_id not in done or r.erm_trial not in done:
            continue
        own, ref = test_margins(sweep_dir, r.trial_id), test_margins(sweep_dir, r.erm_trial)
        if own is None or ref is None:
            continue
        out.setdefault((r.dataset, r.regime, r.variant), []).append(M.paired_deltas(*own, *ref))
    return {k: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for k, v in out.items()}


def delta_summary(deltas: dict) -> pd.DataFrame:
    rows = [{"dataset": d, "regime": r, "method": v, "examples": len(x), "mean_delta": float(x.mean()),
             "median_delta": float(np.median(x)), "frac_positive": float((x > 0).mean())}
            for (d, r, v), (_, x) in deltas.items()]
    return pd.DataFrame(rows, columns=["dataset", "regime", "method", "examples", "mean_delta", "median_delta",
                                       "frac_positive"])


def delta_bins(deltas: dict) -> pd.DataFrame:
    """Long form: one row per (dataset, regime, method, ERM-margin bin) with count, mean delta and SEM."""
    rows = [{"dataset": d, "regime": r, "method": v, **b}
            for (d, r, v), (ref, x) in deltas.items() for b in M.bin_by_reference(ref, x)]
    return pd.DataFrame(rows, columns=["dataset", "regime", "method", "lo", "hi", "center", "count", "mean", "sem"])
