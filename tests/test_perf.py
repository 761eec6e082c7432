"""The perf benchmark times what it claims: every meta method's rows really run their meta update."""
import json

import pytest
import torch

from benchmarks import perf


@pytest.mark.parametrize("label,method,hparams", [r for r in perf.STEP_ROWS if r[1] != "erm"],
                         ids=[r[0] for r in perf.STEP_ROWS if r[1] != "erm"])
def test_step_rows_are_timed_in_steady_state_with_the_meta_update_due(label, method, hparams):
    t = perf.build(method, hparams, "mlp-digits", 32)
    assert t.meta_set is not None and len(t.meta_set) > 0, label     # FSR: probe set filled; MOLERE: split made
    assert t.meta_step_due(), label
    assert not getattr(t, "in_warmup", False), label
    for key, value in hparams.items():
        assert getattr(t.hp, key) == value


def test_main_prints_and_writes_every_row(tmp_path, capsys):
    out, threads = tmp_path / "perf.json", torch.get_num_threads()
    try:
        perf.main(["--settings", "mlp-digits", "--rounds", "1", "--epoch-repeats", "1", "--no-memory",
                   "--threads", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())["settings"]["mlp-digits"]
    assert set(report["step_ms"]) == {lbl for lbl, _, _ in perf.STEP_ROWS}
    assert {lbl for lbl, _, _ in perf.EPOCH_ROWS} <= set(report["epoch_s"])
    assert all(v > 0 for v in report["step_ms"].values())
    assert "x ERM" in capsys.readouterr().out
