"""Does the reweighting do anything? End-of-training diagnostics of a learned weighting function and
one verdict per trial ("untrained", "moved but constant", "learned").
What is computed, the verdict's thresholds and why: docs/design/diagnostics.md.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONSTANT_REL_STD = 0.05
LEARNED_CHANGE = 0.05
SAME_RANKING = 0.9
VERDICTS = ("learned", "moved but constant", "untrained")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ (scipy.stats.spearmanr); NaN when either side is constant or too short."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def _mean_one(w: np.ndarray) -> np.ndarray:
    m = w.mean() if len(w) else 0.0
    return w / m if m > 0 else np.zeros_like(w)


def verdict(change: float, ranking: float, final_rel_std: float, scale_change: float = 0.0) -> str:
    """"untrained" / "moved but constant" / "learned" (module docstring); a NaN ranking (a constant side) counts
    as kept."""
    if change < LEARNED_CHANGE and abs(scale_change) < LEARNED_CHANGE and (
            math.isnan(ranking) or ranking >= SAME_RANKING):
        return "untrained"
    return "moved but constant" if final_rel_std < CONSTANT_REL_STD else "learned"


def weight_diagnostics(weights, losses, noisy=None, erm_margins=None, initial=None,
                       label_dependent: bool = True) -> dict:
    """The numbers and the verdict of the module docstring for one set of final (and initial) weights."""
    w = np.asarray(weights, dtype=float)
    raw_mean = float(w.mean()) if len(w) else float("nan")
    rel = _mean_one(w)
    rel_std = float(rel.std()) if len(w) else float("nan")
    out = {"weight_raw_mean": raw_mean, "weight_rel_std": rel_std,
           "weight_ess": float(1.0 / (1.0 + rel_std ** 2)) if raw_mean > 0 else 0.0,
           "weight_min": float(rel.min()) if len(w) else float("nan"),
           "weight_max": float(rel.max()) if len(w) else float("nan"),
           "spearman_loss": spearman(w, losses),
           "spearman_erm_margin": spearman(w, erm_margins) if erm_margins is not None else float("nan"),
           "label_dependent": bool(label_dependent)}
    if initial is not None:
        w0 = np.asarray(initial, dtype=float)
        out.update(spearman_init_final=spearman(w0, w), initial_rel_std=float(_mean_one(w0).std()),
                   weight_change=float(np.sqrt(np.mean((rel - _mean_one(w0)) ** 2))) if len(w) else float("nan"),
                   weight_scale_change=float(w.mean() / w0.mean() - 1) if len(w) and w0.mean() > 0 else float("nan"))
        out["verdict"] = verdict(out["weight_change"], out["spearman_init_final"], rel_std,
                                 0.0 if np.isnan(out["weight_scale_change"]) else out["weight_scale_change"])
    if noisy is not None and label_dependent:
        noisy = np.asarray(noisy, dtype=bool)
        if noisy.any() and (~noisy).any() and w.sum() > 0:
            out.update(noisy_fraction=float(noisy.mean()), noisy_weight_mass=float(w[noisy].sum() / w.sum()),
                       noisy_over_clean_weight=float(w[noisy].mean() / max(w[~noisy].mean(), 1e-12)))
    return out


def relative_displacement(params, init) -> float:
    """‖φ − φ_0‖ / ‖φ_0‖ over all tensors (∞ if φ_0 = 0 and φ moved, 0 if neither)."""
    num = math.sqrt(sum(float((p.detach().float() - q.float()).pow(2).sum()) for p, q in zip(params, init)))
    den = math.sqrt(sum(float(q.float().pow(2).sum()) for q in init))
    return num / den if den > 0 else (math.inf if num > 0 else 0.0)


def aligned(ids: np.ndarray, ref_ids: np.ndarray, ref_values: np.ndarray) -> np.ndarray | None:
    """`ref_values` (given for `ref_ids`) in the order of `ids`; None when some id is missing."""
    ref_ids = np.asarray(ref_ids)
    order = np.argsort(ref_ids, kind="stable")
    at = np.clip(np.searchsorted(ref_ids[order], ids), 0, max(len(ref_ids) - 1, 0))
    if not len(ref_ids) or not (ref_ids[order][at] == ids).all():
        return None
    return np.asarray(ref_values)[order][at]


