"""The result store trusts only verified outputs; strict YAML; the cause of a worker's death (no Ray here)."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from benchmarks.sweep import safe_yaml
from benchmarks.trial.store import RunDir
from benchmarks.sweep.worker import death_cause
from molere.config import ConfigError


def completed(root, tid: str, reference: dict | None = None) -> RunDir:
    """A trial directory written through the store's own API, as a finished trial leaves it."""
    run = RunDir(root / tid)
    run.start({"trial_id": tid, "config": {"seed": 0}})
    run.append_metrics({"epoch": 1, "train/loss": 1.0})
    run.append_metrics({"epoch": 2, "train/loss": 0.5})
    run.save_margins({"test_ids": np.arange(5), "test_margins": np.linspace(-1, 1, 5),
                      "pool_ids": np.arange(5), "pool_margins": np.zeros(5)})
    result = {"trial_id": tid, "status": "done", "metrics": {"test/acc": 0.5}}
    if reference:
        result["reference"] = reference
    run.finish(result)
    return run


def test_completion_records_outputs_and_is_trusted(tmp_path):
    run = completed(tmp_path, "a")
    files = run.result()["files"]
    assert set(files) == {"config.json", "metrics.jsonl", "margins.npz"}
    assert files["margins.npz"]["size"] == run.file("margins.npz").stat().st_size
    assert json.loads(run.file("done").read_text())["result.json"]["size"] == run.file("result.json").stat().st_size
    assert run.problem() is None and run.status == "done"


@pytest.mark.parametrize("damage, why", [
    (lambda r: r.file("result.json").write_text(r.file("result.json").read_text()[:40]), "result.json differs"),
    (lambda r: r.file("result.json").unlink(), "result.json is missing"),
    (lambda r: r.file("margins.npz").write_bytes(b"PK\x03\x04junk"), "margins.npz changed"),
    (lambda r: r.file("margins.npz").unlink(), "margins.npz is missing"),
    (lambda r: r.file("metrics.jsonl").write_text(r.file("metrics.jsonl").read_text().splitlines()[1] + "\n"),
     "metrics.jsonl changed"),
    (lambda r: r.file("config.json").write_text('{"trial_id": "other"}'), "does not match config.json"),
    (lambda r: r.file("config.json").write_text('{"trial_id": "a", "config": {"seed": 1}}'), "config.json changed"),
    (lambda r: r.file("done").write_bytes(b""), "no record"),       # a marker alone proves nothing
])
def test_damaged_outputs_are_not_trusted(tmp_path, damage, why):
    run = completed(tmp_path, "a")
    damage(run)
    assert why in (run.problem() or ""), run.problem()
    assert run.status == "incomplete"


def test_dependent_is_redone_only_when_its_reference_changed(tmp_path):
    erm = completed(tmp_path, "erm")
    sha = json.loads(erm.file("result.json").read_text())["files"]["margins.npz"]["sha256"]
    same = completed(tmp_path, "lrw", {"trial_id": "erm", "margins_sha256": sha})
    other = completed(tmp_path, "lrw2", {"trial_id": "erm", "margins_sha256": "0" * 64})
    assert same.status == "done"
    assert "ERM reference erm has other margins" in other.problem()
    erm.file("margins.npz").write_bytes(b"junk")     # a damaged reference is the reference's problem
    assert erm.status == "incomplete" and same.status == "done"


def test_reference_used_is_recorded_by_the_trial(tmp_path):
    from benchmarks.trial.config import TrialConfig, erm_reference_config, resolve, trial_id
    from benchmarks.trial.execute import run_trial
    cfg = resolve(TrialConfig.model_validate({"dataset": {"name": "digits"}, "model": {"name": "mlp",
                  "options": {"hidden": [8]}}, "method": {"name": "lrw_easy"}, "train": {"epochs": 1}}))
    erm_id = trial_id(erm_reference_config(cfg))
    run_trial(resolve(erm_reference_config(cfg)), tmp_path / erm_id, store_root=tmp_path)
    result = run_trial(cfg, tmp_path / trial_id(cfg), store_root=tmp_path)
    erm = RunDir(tmp_path / erm_id)
    sha = erm.result()["files"]["margins.npz"]["sha256"]   # crossfit ranking trained in-process: ERM's file only
    assert result["reference"] == {"trial_id": erm_id, "margins_sha256": sha, "files": {"margins.npz": sha}}
    assert RunDir(tmp_path / trial_id(cfg)).status == "done"


def test_strict_yaml():
    assert safe_yaml.loads("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}
    with pytest.raises(ConfigError, match="duplicate key 'a' \\(line 2\\)"):
        safe_yaml.loads("a: 1\na: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'b'"):
        safe_yaml.loads("x: {b: 1, b: 2}\n")
    wide = "a: &a [" + ", ".join(["1"] * 50) + "]\nb: [" + ", ".join(["*a"] * 50) + "]\n"
    assert len(safe_yaml.loads(wide)["b"]) == 50                   # 2.5k values: fine
    with pytest.raises(ConfigError, match="alias"):
        safe_yaml.loads(wide + "c: &c [" + ", ".join(["*a"] * 50) + "]\nd: [" + ", ".join(["*c"] * 50) + "]\n")
    assert len(safe_yaml.excerpt("x" * 10_000)) == 60


def test_death_cause_names_signal_exit_code_and_oom():
    kill = death_cause(-signal.SIGKILL, None)
    assert "killed by SIGKILL" in kill and "out of memory" in kill
    assert death_cause(-signal.SIGSEGV, None) == "trial process killed by SIGSEGV"
    assert death_cause(3, None) == "trial process exited with code 3 before recording a result"
