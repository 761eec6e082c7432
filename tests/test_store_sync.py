"""metrics.jsonl durability at a bounded cost: fsync'ed at most every SYNC_INTERVAL_S, but always before a
checkpoint (never a checkpoint ahead of its metrics) and at completion."""
from __future__ import annotations

import os

import pytest

from benchmarks.trial import store
from benchmarks.trial.store import RunDir


@pytest.fixture
def synced(monkeypatch):
    """The names of the files fsync'ed, in order."""
    names = []
    real = os.fsync

    def spy(fd):
        names.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)
    monkeypatch.setattr(store.os, "fsync", spy)
    return names


def test_appends_within_the_interval_cost_one_fsync(tmp_path, synced, monkeypatch):
    run = RunDir(tmp_path / "t")
    run.start({"trial_id": "t"})
    synced.clear()
    for epoch in range(20):
        run.append_metrics({"epoch": epoch})
    assert synced.count("metrics.jsonl") == 1
    clock = store.time.monotonic() + store.SYNC_INTERVAL_S + 1
    monkeypatch.setattr(store.time, "monotonic", lambda: clock)
    run.append_metrics({"epoch": 20})
    assert synced.count("metrics.jsonl") == 2
    assert [r["epoch"] for r in run.metrics()] == list(range(21))    # every row is in the file at once


def test_a_checkpoint_and_the_completion_sync_the_metrics_first(tmp_path, synced):
    run = RunDir(tmp_path / "t")
    run.start({"trial_id": "t"})
    run.append_metrics({"epoch": 1})
    run.append_metrics({"epoch": 2})
    synced.clear()
    run.save_checkpoint({"epoch": 2}, "t")
    assert synced[0] == "metrics.jsonl" and any(n.startswith(".checkpoint.pt") for n in synced[1:])
    synced.clear()
    run.finish({"trial_id": "t", "status": "done"})
    assert synced[0] == "metrics.jsonl"
    assert run.file("done").exists()
