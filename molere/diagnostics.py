"""Does the reweighting do anything? End-of-training diagnostics of a learned weighting function.

Computed once per trial on the training split (evaluation transforms, the final classifier and
weight network; docs/results/ explains how to read them):

- spread of the weights rescaled to mean 1 over the whole split: relative std (std / mean), effective
  sample size fraction ESS = (Σw)² / (n Σw²) = 1 / (1 + rel_std²), min and max; `weight_raw_mean` is
  the absolute scale before rescaling (with `normalize: false` it multiplies the step size);
- Spearman rank correlation of the weights with the final per-example loss and with the ERM margin
  (when an ERM reference of the same key is at hand);
- under label noise, the mean weight of mislabelled over clean examples and their share of the mass;
- how far the meta-network moved: ‖φ_T − φ_0‖ / ‖φ_0‖ over all its parameters.

`CONSTANT_REL_STD` flags effectively constant weights. With mean-1 weights of relative std c, the
weighted gradient differs from the uniform (ERM) one by ‖Σ (w_i − 1) g_i‖ / n ≤ c · RMS_i ‖g_i‖
(Cauchy-Schwarz): at c < 0.05 by under 5% of one example's gradient, less than the sampling noise of
ERM's own minibatch gradient (≈ RMS ‖g_i‖ / √B, 9% at B = 128). Such weights cannot do what
reweighting is for. A weight network that ignores its input gives c = 0; the literal-Eq. 13 default
measured c ≈ 0.03 (weights 0.50 ± 0.015 on digits).

`UNTRAINED_DISPLACEMENT`: a meta-network whose parameters moved by less than 1e-3 of their norm still
computes (to about that precision) the function it was initialised with: whatever spread its weights
have is the random initialisation's, not learned (measured: 1e-5 to 1e-4 for φ on SGD lr 1e-3).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONSTANT_REL_STD = 0.05
UNTRAINED_DISPLACEMENT = 1e-3


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ (scipy.stats.spearmanr); NaN when either side is constant or too short."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def weight_diagnostics(weights, losses, noisy=None, erm_margins=None) -> dict[str, float]:
    """The spread / correlation / noise-mass numbers of the module docstring for one set of weights."""
    w = np.asarray(weights, dtype=float)
    raw_mean = float(w.mean()) if len(w) else float("nan")
    rel = w / raw_mean if raw_mean > 0 else np.zeros_like(w)
    rel_std = float(rel.std()) if len(w) else float("nan")
    out = {"weight_raw_mean": raw_mean, "weight_rel_std": rel_std,
           "weight_ess": float(1.0 / (1.0 + rel_std ** 2)) if raw_mean > 0 else 0.0,
           "weight_min": float(rel.min()) if len(w) else float("nan"),
           "weight_max": float(rel.max()) if len(w) else float("nan"),
           "spearman_loss": spearman(w, losses),
           "spearman_erm_margin": spearman(w, erm_margins) if erm_margins is not None else float("nan"),
           "constant": bool(rel_std < CONSTANT_REL_STD)}   # `untrained` is added with the displacement
    if noisy is not None:
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


