"""The disk cache of generated data: MNIST-1D is generated once, then read back in any process."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.data import cache
from benchmarks.data.datasets import embedded


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLERE_BENCH_CACHE", str(tmp_path))
    embedded.mnist1d_arrays.cache_clear()
    yield tmp_path
    embedded.mnist1d_arrays.cache_clear()


def test_mnist1d_is_generated_once_then_read_from_disk(fresh, monkeypatch):
    import mnist1d.data
    first = embedded.mnist1d_arrays(200)
    files = list(fresh.glob("mnist1d-*.npz"))
    assert len(files) == 1
    embedded.mnist1d_arrays.cache_clear()           # as in a new trial process

    def boom(args):
        raise AssertionError("regenerated although cached")
    monkeypatch.setattr(mnist1d.data, "make_dataset", boom)
    again = embedded.mnist1d_arrays(200)
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(first, again))
    assert len(first[0]) == 160 and len(first[2]) == 40


def test_cached_arrays_equal_a_fresh_generation(fresh, monkeypatch):
    cached = embedded.mnist1d_arrays(200)
    embedded.mnist1d_arrays.cache_clear()
    monkeypatch.setenv("MOLERE_BENCH_CACHE", str(fresh / "other"))
    generated = embedded.mnist1d_arrays(200)
    assert all(np.array_equal(a, b) for a, b in zip(cached, generated))


def test_other_arguments_get_their_own_file_and_a_corrupt_file_is_regenerated(fresh):
    calls = []

    def make(n):
        calls.append(n)
        return {"x": np.arange(n)}
    assert cache.cached_arrays("t", {"n": 3}, lambda: make(3))["x"].tolist() == [0, 1, 2]
    assert cache.cached_arrays("t", {"n": 4}, lambda: make(4))["x"].tolist() == [0, 1, 2, 3]
    assert cache.cached_arrays("t", {"n": 3}, lambda: make(99))["x"].tolist() == [0, 1, 2]
    assert calls == [3, 4]
    for f in fresh.glob("t-*.npz"):
        f.write_bytes(b"not an npz")
    assert cache.cached_arrays("t", {"n": 3}, lambda: make(3))["x"].tolist() == [0, 1, 2]
    assert calls == [3, 4, 3]


def test_an_unwritable_cache_only_costs_the_regeneration(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MOLERE_BENCH_CACHE", str(blocker / "sub"))   # a folder under a file: cannot exist
    assert cache.cached_arrays("t", {"n": 2}, lambda: {"x": np.ones(2)})["x"].tolist() == [1.0, 1.0]
