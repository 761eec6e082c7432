"""Probabilistic margins p_y - max_{k != y} p_k, paired deltas against a reference, and binning."""
from __future__ import annotations

import numpy as np
import torch

BIN_EDGES = np.linspace(-1.0, 1.0, 11)   # 10 bins of width 0.2 on [-1, 1]


def probabilistic_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example p_y - max_{k != y} p_k from logits, in [-1, 1] (low = hard)."""
    p = torch.softmax(logits.float(), dim=1)
    p_y = p.gather(1, labels.view(-1, 1)).squeeze(1)
    others = p.scatter(1, labels.view(-1, 1), float("-inf"))
    return p_y - others.max(dim=1).values


def paired_deltas(ids: np.ndarray, margins: np.ndarray, ref_ids: np.ndarray, ref_margins: np.ndarray):
    """Match examples by id; returns (reference margins, deltas = margins - reference) on the shared ids."""
    ids, ref_ids = np.asarray(ids), np.asarray(ref_ids)
    common, ia, ib = np.intersect1d(ids, ref_ids, assume_unique=True, return_indices=True)
    if len(common) == 0:
        raise ValueError("no examples in common with the reference run")
    return np.asarray(ref_margins)[ib], np.asarray(margins)[ia] - np.asarray(ref_margins)[ib]


def bin_by_reference(ref_margins: np.ndarray, deltas: np.ndarray) -> list[dict]:
    """Mean delta, SEM and count per reference-margin bin (10 bins of width 0.2; -1 and 1 included)."""
    ref = np.clip(np.asarray(ref_margins, dtype=float), -1.0, 1.0)
    deltas = np.asarray(deltas, dtype=float)
    which = np.clip(np.digitize(ref, BIN_EDGES[1:-1], right=False), 0, len(BIN_EDGES) - 2)
    rows = []
    for b in range(len(BIN_EDGES) - 1):
        d = deltas[which == b]
        n = len(d)
        rows.append({"lo": float(BIN_EDGES[b]), "hi": float(BIN_EDGES[b + 1]),
                     "center": float((BIN_EDGES[b] + BIN_EDGES[b + 1]) / 2), "count": int(n),
                     "mean": float(d.mean()) if n else float("nan"),
                     "sem": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")})
    return rows


def histogram(values: np.ndarray, bins: int = 40, lo: float = -1.0, hi: float = 1.0):
    """Counts and edges of `values` on [lo, hi]."""
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    return counts, edges


def summary(margins: np.ndarray) -> dict[str, float]:
    m = np.asarray(margins, dtype=float)
    return {"mean": float(m.mean()), "median": float(np.median(m)), "frac_negative": float((m < 0).mean()),
            "q10": float(np.quantile(m, 0.1)), "q90": float(np.quantile(m, 0.9))}
