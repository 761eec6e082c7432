"""Margins against an independent numpy computation; binning edge cases; paired deltas."""
import numpy as np
import pytest
import torch

from molere.margins import bin_by_reference, histogram, paired_deltas, probabilistic_margin


def numpy_margin(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    out = []
    for row, y in zip(p, labels):
        others = np.delete(row, y)
        out.append(row[y] - others.max())
    return np.array(out)


def test_margin_equals_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 7)) * 3
    labels = rng.integers(0, 7, 200)
    got = probabilistic_margin(torch.tensor(logits), torch.tensor(labels)).numpy()
    assert np.allclose(got, numpy_margin(logits, labels), atol=1e-6)
    assert got.min() >= -1 and got.max() <= 1


def test_margin_extremes():
    logits = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    m = probabilistic_margin(logits, torch.tensor([0, 0]))
    assert m[0] == pytest.approx(1.0) and m[1] == pytest.approx(-1.0)


def test_binning_edges_and_empty_bins():
    ref = np.array([-1.0, -0.95, 0.0, 0.05, 1.0, 1.0])
    d = np.array([0.1, 0.3, -0.2, 0.4, 0.5, 0.7])
    rows = bin_by_reference(ref, d)
    assert len(rows) == 10 and [r["count"] for r in rows] == [2, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert rows[0]["mean"] == pytest.approx(0.2)            # -1 falls in the first bin
    assert rows[9]["mean"] == pytest.approx(0.6)            # +1 falls in the last bin
    assert rows[5]["lo"] == pytest.approx(0.0)              # 0.0 opens the bin [0, 0.2)
    assert rows[0]["sem"] == pytest.approx(np.std([0.1, 0.3], ddof=1) / np.sqrt(2))
    assert np.isnan(rows[1]["mean"]) and rows[1]["count"] == 0


def test_binning_matches_numpy_digitize():
    rng = np.random.default_rng(1)
    ref = rng.uniform(-1, 1, 1000)
    d = rng.normal(size=1000)
    rows = bin_by_reference(ref, d)
    for b, r in enumerate(rows):
        sel = (ref >= -1 + 0.2 * b) & (ref < -1 + 0.2 * (b + 1))
        assert r["count"] == sel.sum()
        assert r["mean"] == pytest.approx(d[sel].mean())


def test_paired_deltas_match_by_id():
    ids = np.array([5, 1, 9, 3])
    m = np.array([0.5, 0.1, 0.9, 0.3])
    ref_ids = np.array([1, 3, 5, 7])
    ref = np.array([0.0, 0.2, 0.4, 0.6])
    r, d = paired_deltas(ids, m, ref_ids, ref)
    assert np.allclose(r, [0.0, 0.2, 0.4]) and np.allclose(d, [0.1, 0.1, 0.1])
    with pytest.raises(ValueError):
        paired_deltas(np.array([100]), np.array([0.0]), ref_ids, ref)


def test_histogram_counts_everything():
    v = np.array([-1.0, 1.0, 0.0, 2.0])
    counts, edges = histogram(v, bins=4)
    assert counts.sum() == 4 and edges[0] == -1 and edges[-1] == 1
