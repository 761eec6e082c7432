"""Sweeps through Ray Tune (run under the no-network wrapper): result store, reruns, kill -9, failures,
ERM reuse, a two-node cluster and the offline W&B runs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from benchmarks.trial.store import RunDir, read_jsonl
from benchmarks.wandb_io.reader import find_runs, load_table, read_run

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

PLUGIN = '''
import time
from molere.registry import register_method
from molere.trainer import Trainer


@register_method("test_boom")
class Boom(Trainer):
    """Raises at the start of epoch 2."""
    def on_epoch_start(self, epoch):
        if epoch == 1:
            raise RuntimeError("boom in epoch 2")


@register_method("test_nan")
class NaNLoss(Trainer):
    """Returns a NaN training loss."""
    def training_step(self, batch):
        return super().training_step(batch) * float("nan")


@register_method("test_slow")
class Slow(Trainer):
    """ERM that sleeps after every epoch (so a sweep can be interrupted mid-way)."""
    def on_epoch_end(self, epoch):
        time.sleep(0.4)
        return {}
'''


def ours(marker: str) -> list[int]:
    """Pids of processes started with our unique RAY_TMPDIR (Ray daemons and workers of one test)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if f"RAY_TMPDIR={marker}".encode() in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def kill_ours(marker: str) -> None:
    for pid in ours(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def env(tmp_path):
    """Environment of the sweep subprocesses: a private Ray temp dir, offline W&B, the test plugin."""
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "sweep_test_plugin.py").write_text(PLUGIN)
    marker = tempfile.mkdtemp(prefix="rt", dir="/tmp")   # short: Ray's socket paths must stay < 108 chars
    e = dict(os.environ, RAY_TMPDIR=marker, WANDB_MODE="offline", WANDB_SILENT="true",
             PYTHONPATH=os.pathsep.join([str(tmp_path / "plug"), str(ROOT)]), OMP_NUM_THREADS="1")
    e.pop("RAY_ADDRESS", None)
    yield e
    kill_ours(marker)
    shutil.rmtree(marker, ignore_errors=True)


def sweep_file(tmp_path, **over) -> Path:
    d = {"name": "s", "results_dir": str(tmp_path / "results"), "datasets": [{"name": "digits"}],
         "model": {"name": "mlp", "options": {"hidden": [16]}}, "methods": {"erm": {}}, "seeds": [0],
         "train": {"epochs": 1, "batch_size": 256}, "resources": {"cpu": 1}, "wandb": {"mode": "disabled"},
         "plugins": ["sweep_test_plugin"]}
    d.update(over)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def sweep(path, env, *args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "benchmarks.run", str(path), *args], env=env, cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def trials(tmp_path) -> dict[str, RunDir]:
    return {d.name: RunDir(d) for d in sorted((tmp_path / "results" / "s" / "trials").iterdir())}


def plan(tmp_path) -> list[dict]:
    return json.loads((tmp_path / "results" / "s" / "plan.json").read_text())


def test_sweep_store_rerun_erm_once_and_wandb(tmp_path, env):
    path = sweep_file(tmp_path, methods={"erm": {}, "lrw_easy": {}, "lrw_random": {}, "lrw_hard": {}},
                      seeds=[0, 1], wandb={"mode": "offline", "project": "p", "log_every_steps": 2})
    r = sweep(path, env, timeout=420)   # 14 Ray trials: 8, erm_train_val and 2 out-of-fold ERM models per seed
    assert r.returncode == 0, r.stderr
    runs = trials(tmp_path)
    assert len(runs) == 10 and all(run.status == "done" for run in runs.values())   # + erm_train_val x 2
    entries = {e["trial_id"]: e for e in plan(tmp_path)}
    assert set(entries) == set(runs)
    assert (tmp_path / "results" / "s" / "sweep.yaml").exists()
    # ERM trained once per key: two ERM trials (one per seed), every train-twice trial reused it
    erm = [t for t, e in entries.items() if e["labels"]["method"] == "erm"]
    assert len(erm) == 2
    for tid, e in entries.items():
        if e["labels"]["method"] not in ("erm", "erm_train_val"):   # the same-data reference uses none
            assert e["erm_trial_id"] in erm
            assert runs[tid].result()["method_info"]["erm_pass"] == "reused"
    # the offline W&B runs: group, job type, tags, final accuracy, margin histogram, gain over ERM
    found = find_runs(tmp_path / "results" / "s")
    for tid, e in entries.items():
        w = read_run(found[tid])
        lab = e["labels"]
        assert w["run"]["group"] == "s" and w["run"]["job_type"] == lab["method"]
        assert w["run"]["tags"] == [lab["dataset"], lab["regime"], f"seed-{lab['seed']}"]
        acc = runs[tid].result()["metrics"]["test/acc"]
        assert w["summary"]["final/test/acc"] == pytest.approx(acc)
        hist = [h["test/margin_hist"] for h in w["history"] if "test/margin_hist" in h][0]
        assert hist["_type"] == "histogram" and sum(hist["values"]) == len(runs[tid].margins()["test_margins"])
        assert w["config"]["method"]["name"] == lab["method"]
        assert w["config"]["regime"] == lab["regime"] and w["config"]["hparams_id"] == lab["hparams_id"]
        assert w["config"]["env"]["packages"]["torch"] and w["config"]["env"]["host"]
        assert any("train/step_loss" in h for h in w["history"])
        assert any(a["type"] == "trial-result" for a in w["artifacts"])
        if lab["method"] != "erm":
            ref = runs[e["erm_trial_id"]].result()["metrics"]["test/acc"]
            assert w["summary"]["gain_over_erm/test_acc"] == pytest.approx(100 * (acc - ref))
            cols, rows = load_table(found[tid], w["summary"]["test/margin_delta_vs_erm"])
            assert cols[0] == "erm_margin" and sum(row[3] for row in rows) == hist_total(hist)
    # the sweep's W&B dashboard, written as a specification (offline), built from these runs
    spec = json.loads((tmp_path / "results" / "s" / "dashboard" / "spec.json").read_text())
    assert spec["runsets"]["trials"]["filters"][0] == ["Group", "==", "s"]
    assert "Gain over ERM" in [sec["name"] for sec in spec["sections"]]
    assert "dashboard/spec.json (offline" in r.stdout
    # a rerun runs nothing; deleting one completion marker reruns exactly that trial
    stamps = {t: run.file("config.json").stat().st_mtime_ns for t, run in runs.items()}
    r = sweep(path, env)
    assert r.returncode == 0 and "running" not in r.stderr and "10 trials: 10 done" in r.stdout
    assert {t: run.file("config.json").stat().st_mtime_ns for t, run in runs.items()} == stamps
    victim = next(t for t, e in entries.items() if e["labels"]["method"] == "lrw_hard")
    runs[victim].file("done").unlink()
    r = sweep(path, env)
    assert r.returncode == 0, r.stderr
    assert "running 1 of 10 trials" in r.stderr
    changed = {t for t, run in runs.items() if run.file("config.json").stat().st_mtime_ns != stamps[t]}
    assert changed == {victim} and runs[victim].status == "done"


def hist_total(hist) -> int:
    return int(sum(hist["values"]))


def test_failing_trials_are_isolated_and_reported(tmp_path, env):
    path = sweep_file(tmp_path, methods={"erm": {}, "test_boom": {}, "test_nan": {}}, train={"epochs": 2})
    r = sweep(path, env)
    assert r.returncode == 1, r.stderr
    by_method = {e["labels"]["method"]: RunDir(tmp_path / "results" / "s" / "trials" / e["trial_id"])
                 for e in plan(tmp_path)}
    assert by_method["erm"].status == "done"
    boom = by_method["test_boom"].failure()
    assert boom["error"] == "RuntimeError: boom in epoch 2" and "on_epoch_start" in boom["traceback"]
    # a NaN loss is a diverged trial (molere.guard): sealed, counted apart from done and failed, not rerun
    nan = by_method["test_nan"]
    assert nan.status == "diverged" and not nan.file("failed.json").exists()
    res = nan.result()
    assert res["status"] == "diverged" and res["diverged_epoch"] == 1
    assert res["diverged_reason"].startswith("non-finite training loss nan")
    assert [row["epoch"] for row in by_method["test_boom"].metrics()] == [1]
    assert "1 done, 1 diverged, 1 failed" in r.stdout
    assert "FAILED" in r.stdout and "boom in epoch 2" in r.stdout
    assert f"DIVERGED {nan.path.name}" in r.stdout and "at epoch 1: non-finite training loss nan" in r.stdout
    # each trial's stdout/stderr is kept in its store folder (Ray's own logs are not); the summary points to it
    log = by_method["test_boom"].file("trial.log")
    content = log.read_text()
    assert "Traceback (most recent call last)" in content and "RuntimeError: boom in epoch 2" in content
    assert f"log: {log}" in r.stdout
    assert "=== trial" in by_method["erm"].file("trial.log").read_text()
    assert "diverged" in nan.file("trial.log").read_text()
    r = sweep(path, env)   # only the failed trial runs again; the diverged one is a finished outcome
    assert r.returncode == 1 and "running 1 of 3 trials" in r.stderr, r.stderr
    assert by_method["test_nan"].status == "diverged"


def test_sigkill_mid_sweep_then_rerun_completes_every_trial_once(tmp_path, env):
    path = sweep_file(tmp_path, methods={"test_slow": {}}, seeds=list(range(6)), train={"epochs": 3},
                      store={"checkpoint": True})
    proc = subprocess.Popen([PY, "-m", "benchmarks.run", str(path)], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tdir = tmp_path / "results" / "s" / "trials"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not any(tdir.glob("*/done")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kill_ours(env["RAY_TMPDIR"])         # Ray daemons and workers of the killed driver
    done_before = len(list(tdir.glob("*/done")))
    assert 1 <= done_before < 6, "the sweep was not interrupted mid-way"
    r = sweep(path, env)
    assert r.returncode == 0, r.stderr
    assert f"running {6 - done_before} of 6 trials" in r.stderr
    ids = [e["trial_id"] for e in plan(tmp_path)]
    assert sorted(ids) == sorted(p.name for p in tdir.iterdir()) and len(set(ids)) == 6
    for tid in ids:
        run = RunDir(tdir / tid)
        assert run.status == "done"
        assert run.result()["metrics"]["test/acc"] > 0
        assert [row["epoch"] for row in read_jsonl(run.file("metrics.jsonl"))] == [1, 2, 3]
        lines = run.file("metrics.jsonl").read_text().splitlines()
        assert all(json.loads(line) for line in lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_cluster_via_address(tmp_path, env):
    ray = str(Path(PY).parent / "ray")
    port = _free_port()
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    subprocess.run([ray, "start", "--head", f"--port={port}", "--include-dashboard=false",
                    '--resources={"head_node": 1}', *common], env=env, check=True, capture_output=True, timeout=120)
    subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", '--resources={"second_node": 1}', *common],
                   env=env, check=True, capture_output=True, timeout=120)
    path = sweep_file(tmp_path, methods={"test_slow": {}}, seeds=[0, 1, 2, 3], train={"epochs": 2})
    r = sweep(path, env, "--address", f"127.0.0.1:{port}")
    assert r.returncode == 0, r.stderr
    runs = trials(tmp_path)
    assert len(runs) == 4 and all(run.status == "done" for run in runs.values())
    nodes = {json.loads(run.file("placement.json").read_text())["node_id"] for run in runs.values()}
    assert len(nodes) == 2


def test_unreachable_address_is_a_clear_error(tmp_path, env, capsys, monkeypatch):
    from benchmarks import run
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = sweep_file(tmp_path, plugins=[])
    with pytest.raises(SystemExit) as exc:
        run.main([str(path), "--address", f"127.0.0.1:{_free_port()}"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--address: cannot reach the Ray cluster" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results").exists()                  # refused before anything was written
    import ray
    assert not ray.is_initialized()
