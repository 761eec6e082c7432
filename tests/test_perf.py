"""The perf benchmark times what it claims: every meta method's rows really run their meta update; the GPU
check fits its budget, keeps every step's output and always ends with its summary."""
import json
import sys

import pytest
import torch

from molere.registry import METHODS
from molere.reweighting import MetaTrainer

from benchmarks import perf, perf_image


@pytest.mark.parametrize("label,method,hparams", [r for r in perf.STEP_ROWS if r[1] != "erm"],
                         ids=[r[0] for r in perf.STEP_ROWS if r[1] != "erm"])
def test_step_rows_are_timed_in_steady_state_with_the_meta_update_due(label, method, hparams):
    t = perf.build(method, hparams, "mlp-digits", 32)
    if isinstance(t, MetaTrainer):
        assert t.meta_set is not None and len(t.meta_set) > 0, label     # FSR: probe set filled; MOLERE: split made
        assert t.meta_step_due(), label
    assert not getattr(t, "in_warmup", False), label
    assert t.epoch >= getattr(t, "burn_in_epochs", 0), label            # MBR: weighting from the first step
    for key, value in hparams.items():
        assert getattr(t.hp, key) == value


def test_main_prints_and_writes_every_row(tmp_path, capsys):
    out, threads = tmp_path / "perf.json", torch.get_num_threads()
    try:
        builtin = [m for m in METHODS.names()   # not the plugins other test modules registered
                   if METHODS.get(m).__module__.split(".")[0] in ("baselines", "molere")]
        perf.main(["--settings", "mlp-digits", "--rounds", "1", "--epoch-repeats", "1", "--no-memory",
                   "--threads", "1", "--json", str(out), "--methods", *builtin])
    finally:
        torch.set_num_threads(threads)
    report = json.loads(out.read_text())["settings"]["mlp-digits"]
    assert set(report["step_ms"]) == {lbl for lbl, _, _ in perf.STEP_ROWS}
    assert {lbl for lbl, _, _ in perf.EPOCH_ROWS} <= set(report["epoch_s"])
    assert all(v > 0 for v in report["step_ms"].values())
    assert "x ERM" in capsys.readouterr().out


def test_image_settings_time_every_precision_side_by_side(tmp_path, capsys):
    out, threads = tmp_path / "perf.json", torch.get_num_threads()
    try:
        rc = perf.main(["--device", "cpu", "--settings", "vit_tiny", "--image-size", "32", "--batch-size", "4",
                        "--classes", "10", "--methods", "molere", "--epoch-repeats", "1", "--warmup-epochs", "0",
                        "--threads", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    rows = json.loads(out.read_text())["settings"]["vit_tiny"]["rows"]
    expected = {f"{lbl} [{p}]" for p in ("fp32", "bf16")
                for lbl in ("erm", "molere", "molere, head-only", "molere, finite_diff")}
    assert set(rows) == expected
    assert all(r["images_per_s"] > 0 and r["epochs"] == 1 for r in rows.values())
    assert "bf16/fp32 img/s" in capsys.readouterr().out


def test_image_trainers_share_weights_and_differ_in_precision():
    import argparse
    a = argparse.Namespace(image_size=32, batch_size=4, classes=10, methods=["lrw"], precisions=["fp32", "bf16"])
    trainers = perf_image.image_trainers("vit_tiny", a, "cpu")
    assert {k[0] for k in trainers} == {"fp32", "bf16"}
    assert {t.cfg.precision for (p, _), t in trainers.items() if p == "bf16"} == {"bf16"}
    first = [next(t.model.parameters()) for t in trainers.values()]
    assert all(torch.equal(first[0], f) for f in first)
    assert len({len(t.train_set) for (_, lbl), t in trainers.items() if lbl == "erm"}) == 1


def test_a_row_out_of_gpu_memory_is_reported_and_the_others_go_on():
    class Fake:
        device = torch.device("cpu")
        train_set = range(10)

        def __init__(self, fail):
            self.fail = fail

        def train_epoch(self):
            if self.fail:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    out = perf_image.time_image_epochs({"a": Fake(False), "b": Fake(True)}, repeats=2, warmup=0, time_limit=None)
    assert out["b"] == {"error": "out of memory"} and out["a"]["epochs"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_cuda_without_a_gpu_stops_with_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        perf.main(["--device", "cuda"])
    assert exc.value.code == 2 and "no CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_check_runs_its_two_steps_at_toy_sizes_on_cpu(tmp_path, capsys):
    """The prepared GPU script's CPU twin: the perf table and a two-epoch molere trial on a fake ImageFolder."""
    from benchmarks import gpu_check
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "perf.json").read_text())
    assert {"erm [bf16]", "molere [bf16]"} <= set(report["settings"]["vit_tiny"]["rows"])
    assert report["settings"]["vit_tiny"]["resident"] == "one"
    result = json.loads((tmp_path / "trial" / "result.json").read_text())
    assert result["status"] == "done" and result["metrics"]["epoch"] == 2
    assert result["metrics"]["split/warmup"] == 0.0          # the second epoch ran MOLERE's splitter
    table = (tmp_path / "summary.md").read_text()
    assert "| perf | exit 0 |" in table and "| molere trial | exit 0 |" in table and "ERM fp32" in table
    assert table in capsys.readouterr().out


def test_gpu_check_timeouts_fit_its_budget():
    from benchmarks import gpu_check
    assert gpu_check.PERF_TIMEOUT_S + gpu_check.TRIAL_TIMEOUT_S + 30 <= gpu_check.BUDGET_S == 8 * 60
    assert 2 * gpu_check.PERF_SETTING_LIMIT_S + 40 <= gpu_check.PERF_TIMEOUT_S   # two settings, the last rows


def test_a_step_that_times_out_keeps_its_stdout_and_stderr(tmp_path):
    from benchmarks import gpu_check
    code = ("import sys, time; print('to stdout', flush=True); print('to stderr', file=sys.stderr, flush=True); "
            "time.sleep(60)")
    step = gpu_check.run_step("slow", [sys.executable, "-c", code], str(tmp_path / "slow.log"), timeout=3)
    log = (tmp_path / "slow.log").read_text()
    assert not step["ok"] and step["status"] == "timed out after 3 s" and step["seconds"] < 30
    assert "to stdout" in log and "to stderr" in log and "timed out" in log


def test_the_summary_is_printed_when_a_step_fails(tmp_path, monkeypatch, capsys):
    from benchmarks import gpu_check
    calls = []

    def fake_step(name, cmd, log, timeout):
        calls.append(name)
        return {"step": name, "status": "exit 1" if name == "perf" else "exit 0", "ok": name != "perf",
                "seconds": 1.0, "log": log}
    monkeypatch.setattr(gpu_check, "run_step", fake_step)
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert calls == ["perf", "molere trial"]                 # a failed step does not stop the next
    assert "| perf | exit 1 |" in out and "perf: no results written" in out and "total" in out


def test_one_trainer_is_resident_at_a_time_and_rows_past_the_limit_are_skipped():
    import time
    import weakref
    alive, most = [], []

    class Fake:
        device = torch.device("cpu")
        train_set = range(10)

        def train_epoch(self):
            most.append(sum(r() is not None for r in alive))
            time.sleep(0.01)

    def make(fail=False):
        if fail:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        t = Fake()
        alive.append(weakref.ref(t))
        return t
    builders = {"a": make, "b": lambda: make(fail=True), "c": make}
    out = perf_image.time_one_at_a_time(builders, repeats=2, warmup=1, time_limit=None)
    assert out["a"]["epochs"] == 2 and out["b"] == {"error": "out of memory"} and out["c"]["epochs"] == 2
    assert max(most) == 1                                     # never two trainers alive
    out = perf_image.time_one_at_a_time({"a": make, "b": make}, repeats=1, warmup=0, time_limit=0.0)
    assert out["a"] == {"error": "skipped (time limit)"} and out["b"] == out["a"]


def test_meta_stream_row_measures_supply_against_the_step_rate(tmp_path, capsys):
    out, threads = tmp_path / "perf.json", torch.get_num_threads()
    try:
        assert perf.main(["--device", "cpu", "--settings", "meta-stream", "--batch-size", "8", "--rounds", "2",
                          "--workers", "2", "--threads", "1", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    r = json.loads(out.read_text())["settings"]["meta-stream"]
    assert r["workers"] == {"train": 1, "meta": 1}                 # the trial's 2 workers, shared by demand
    assert r["compute_steps_per_s"] > 0 and r["meta_supply_batches_per_s"] > 0 and r["step_s"] > 0
    assert r["meta_wait_s"] >= 0 and r["train_wait_s"] >= 0
    assert "the step rate" in capsys.readouterr().out
