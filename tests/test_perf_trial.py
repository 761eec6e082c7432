"""benchmarks.perf: the fixed cost of one sweep trial as a number, rows printed as measured, JSON written as
it goes (an interrupted run keeps what it measured)."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import perf


@pytest.mark.slow
def test_trial_setting_times_a_sweep_trial_through_the_worker(tmp_path, capsys):
    out = tmp_path / "perf.json"
    assert perf.main(["--settings", "trial", "--trial-repeats", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["settings"]["trial"]
    assert set(rows) == {"W&B offline", "W&B disabled"}
    for r in rows.values():
        assert 0 < r["run_trial_s"] < r["trial_s"] and r["trials"] == 1
        assert r["fixed_s"] == pytest.approx(r["trial_s"] - r["run_trial_s"])
    shown = capsys.readouterr().out
    assert "fixed cost of one trial" in shown and "W&B offline" in shown and "W&B disabled" in shown


def test_the_json_is_written_after_every_table(tmp_path, monkeypatch):
    out, threads = tmp_path / "perf.json", torch.get_num_threads()

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(perf, "time_epochs", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            perf.main(["--settings", "mlp-digits", "--rounds", "1", "--no-memory", "--threads", "1",
                       "--out", str(out), "--methods", "erm"])
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())["settings"]["mlp-digits"]
    assert set(report["step_ms"]) == {lbl for lbl, _, _ in perf.STEP_ROWS} and "epoch_s" not in report


def test_rows_are_printed_as_they_are_measured(monkeypatch, capsys):
    """The step table is on screen before the epoch rows are timed."""
    seen = []
    monkeypatch.setattr(perf, "time_steps", lambda trainers, rounds: {k: 1.0 for k in trainers})
    monkeypatch.setattr(perf, "build", lambda *a, **k: None)
    monkeypatch.setattr(perf, "time_epochs", lambda trainers, repeats: seen.append(capsys.readouterr().out) or
                        {k: 1.0 for k in trainers})
    import argparse
    a = argparse.Namespace(batch_size=8, threads=1, rounds=1, epoch_repeats=1, methods=["erm"], no_memory=True)
    perf.small_setting("mlp-digits", a, "cpu", {}, lambda: None)
    assert "per step, meta update every step" in seen[0] and "lrw (Q=1)" in seen[0]
