"""molere.splits gives every caller the draws it made before the helper existed (reference formulas)."""
import numpy as np
import pytest
import torch

from molere.reference_runs import fold_of
from molere.splits import Draw, random_subset, stratified_split


def old_stratified(labels, fraction, seed):
    rng, held = np.random.default_rng(seed), []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        rng.shuffle(pos)
        held.extend(pos[: int(round(fraction * len(pos)))])
    held = np.sort(np.asarray(held, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), held), held


def old_fold_of(ids, labels, folds, seed):
    rng, out = np.random.default_rng([seed, folds]), np.empty(len(ids), dtype=np.int64)
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        pos = pos[np.argsort(ids[pos], kind="stable")][rng.permutation(len(pos))]
        out[pos] = (np.arange(len(pos)) + rng.integers(folds)) % folds
    return out


@pytest.mark.parametrize("n,seed", [(0, 0), (7, 1), (503, 12345)])
def test_draws_unchanged(n, seed):
    r = np.random.default_rng(seed + 99)
    labels, ids = r.integers(0, 7, n), r.permutation(3 * n)[:n]
    for f in (0.0, 0.1, 0.5):
        for s in (seed, [seed, 11]):
            assert all(np.array_equal(a, b) for a, b in zip(stratified_split(labels, f, s),
                                                            old_stratified(labels, f, s)))
    for k in (2, 5):
        assert np.array_equal(fold_of(ids, labels, k, seed), old_fold_of(ids, labels, k, seed))
    k = n // 3
    assert np.array_equal(random_subset(n, k, seed, "numpy_choice"),
                          np.sort(np.random.default_rng(seed).choice(n, k, replace=False)))
    assert np.array_equal(random_subset(n, k, seed, "torch"),
                          torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values.numpy())
    g, g_old = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)   # a shared generator
    assert np.array_equal(Draw(g, "torch").first(n, k), torch.randperm(n, generator=g_old)[:k].numpy())
    assert torch.equal(g.get_state(), g_old.get_state())
