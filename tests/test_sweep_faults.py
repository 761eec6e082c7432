"""Sweeps under faults (run under the no-network wrapper): damaged outputs, time limits, worker deaths,
concurrent runs on one folder, and credentials that must not reach the disk."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.report import build_report
from benchmarks.trial.store import RunDir, read_jsonl
from tests.test_sweep_run import PY, ROOT, env, kill_ours, ours, plan, sweep, sweep_file  # noqa: F401 (env: a fixture)

FAULTS = '''
import hashlib
import os
import signal
import subprocess
import sys
import time
from molere.registry import register_method
from molere.trainer import Trainer


@register_method("test_sleep")
class Sleep(Trainer):
    """Sleeps far past any time limit."""
    def on_epoch_start(self, epoch):
        time.sleep(600)


@register_method("test_sigkill")
class SigKill(Trainer):
    """Counts its attempts in a file, then dies by SIGKILL (what the OOM killer sends)."""
    def on_epoch_start(self, epoch):
        with open(os.environ["FAULT_ATTEMPTS"], "a") as f:
            f.write("attempt\\n")
        os.kill(os.getpid(), signal.SIGKILL)


@register_method("test_exit")
class Exit(Trainer):
    """Leaves without a word (os._exit)."""
    def on_epoch_start(self, epoch):
        os._exit(3)


@register_method("test_crawl")
class Crawl(Trainer):
    """ERM that starts a new-session sleeper in its first epoch and sleeps 2 s after every epoch."""
    def on_epoch_start(self, epoch):
        if epoch == 0:
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)

    def on_epoch_end(self, epoch):
        time.sleep(2)
        return {}


@register_method("test_secret")
class Secret(Trainer):
    """ERM that reports the sha256 of the W&B key it sees (proof that the key reached the worker)."""
    def on_epoch_start(self, epoch):
        self.info["key_sha"] = hashlib.sha256(os.environ.get("WANDB_API_KEY", "").encode()).hexdigest()
'''


def with_faults(tmp_path, **over) -> Path:
    (tmp_path / "plug" / "fault_test_plugin.py").write_text(FAULTS)
    return sweep_file(tmp_path, plugins=["sweep_test_plugin", "fault_test_plugin"], **over)


def by_label(tmp_path) -> dict[tuple, RunDir]:
    return {(e["labels"]["method"], e["labels"]["seed"]): RunDir(tmp_path / "results" / "s" / "trials" / e["trial_id"])
            for e in plan(tmp_path)}


def stamps(runs: dict) -> dict:
    return {k: r.file("config.json").stat().st_mtime_ns for k, r in runs.items()}


def test_damaged_outputs_are_rerun_exactly_and_named_by_the_report(tmp_path, env):
    path = with_faults(tmp_path, methods={"erm": {}, "lrw_easy": {}}, seeds=[0, 1], train={"epochs": 2})
    r = sweep(path, env, timeout=600)
    assert r.returncode == 0, r.stderr
    runs = by_label(tmp_path)
    before = stamps(runs)
    text = runs["lrw_easy", 0].file("result.json").read_text()
    runs["lrw_easy", 0].file("result.json").write_text(text[: len(text) // 2])          # truncated
    runs["erm", 1].file("margins.npz").write_bytes(b"PK\x03\x04 not a zip any more")      # corrupt reference
    lines = runs["erm", 0].file("metrics.jsonl").read_text().splitlines()
    runs["erm", 0].file("metrics.jsonl").write_text(lines[1] + "\n")                      # a row deleted
    assert {k for k, run in runs.items() if run.status != "done"} == {("lrw_easy", 0), ("erm", 1), ("erm", 0)}
    notes = build_report(tmp_path / "results" / "s")["notes"]
    untrusted = [n for n in notes if "not trusted" in n]
    assert len(untrusted) == 3, notes
    assert any(runs["erm", 1].path.name in n and "margins.npz changed" in n for n in untrusted)
    assert any(runs["erm", 0].path.name in n and "metrics.jsonl changed" in n for n in untrusted)
    r = sweep(path, env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("not trusting trial") == 3 and "running 3 of 6 trials" in r.stderr   # 4 + erm_train_val
    after = stamps(runs)
    # redone: exactly the damaged ones; lrw_easy seed 1 kept (its rerun ERM gave the same margins)
    assert {k for k in runs if after[k] != before[k]} == {("lrw_easy", 0), ("erm", 1), ("erm", 0)}
    assert all(run.status == "done" for run in runs.values())
    assert [row["epoch"] for row in runs["erm", 0].metrics()] == [1, 2]
    report = build_report(tmp_path / "results" / "s")
    assert report["counts"] == {"done": 6} and not [n for n in report["notes"] if "not trusted" in n]
    stale = tmp_path / "results" / "s" / ".ray" / "tune" / "experiment_state.json"   # as a kill leaves it
    stale.parent.mkdir(parents=True)
    stale.write_text('{"trials": [')
    r = sweep(path, env, timeout=600)
    assert r.returncode == 0 and "running" not in r.stderr and not stale.parent.parent.exists()


def test_time_limit_and_worker_deaths_are_recorded_once(tmp_path, env):
    env = dict(env, FAULT_ATTEMPTS=str(tmp_path / "attempts"))
    path = with_faults(tmp_path, methods={"erm": {}, "test_sleep": {}, "test_sigkill": {}, "test_exit": {}},
                       resources={"cpu": 1, "time_limit_s": 30})
    t0 = time.monotonic()
    r = sweep(path, env, timeout=600)
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - t0 < 200
    runs = {m: run for (m, _), run in by_label(tmp_path).items()}
    assert runs["erm"].status == "done"
    sleep, kill, exit_ = (runs[m].failure() for m in ("test_sleep", "test_sigkill", "test_exit"))
    assert "time limit of 30 s exceeded" in sleep["error"] and sleep["cause"] == "time limit"
    assert "killed by SIGKILL" in kill["error"] and "out of memory" in kill["error"] and kill["exitcode"] == -9
    assert "exited with code 3" in exit_["error"] and exit_["cause"] == "worker died"
    assert "1 done, 3 failed, 0 incomplete" in r.stdout and r.stdout.count("FAILED") == 3
    assert (tmp_path / "attempts").read_text().count("attempt") == 1      # no silent retries
    sleeper = json.loads(runs["test_sleep"].file("placement.json").read_text())["pid"]
    assert not Path(f"/proc/{sleeper}").exists()                          # the overrunning trial is stopped


def _cmdlines(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
        except OSError:
            pass
    return out


def test_killed_driver_leaves_no_process_and_a_rerun_records_every_epoch_once(tmp_path, env):
    path = with_faults(tmp_path, methods={"test_crawl": {}}, seeds=[0, 1], train={"epochs": 4},
                       store={"checkpoint": True})
    driver = subprocess.Popen([PY, "-m", "benchmarks.run", str(path)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tdir = tmp_path / "results" / "s" / "trials"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(len(read_jsonl(p)) for p in tdir.glob("*/metrics.jsonl")):
        time.sleep(0.2)
    assert any("time.sleep(600)" in c for c in _cmdlines(ours(env["RAY_TMPDIR"]))), "no trial under way"
    driver.kill()                                   # SIGKILL: no cleanup of its own
    driver.wait()
    again = dict(env, RAY_TMPDIR=tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    try:
        rerun = subprocess.Popen([PY, "-m", "benchmarks.run", str(path)], env=again, cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)   # at once
        time.sleep(10)
        left = _cmdlines(ours(env["RAY_TMPDIR"]))
        assert left == [], left
        out, err = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, err
    finally:
        kill_ours(again["RAY_TMPDIR"])
        shutil.rmtree(again["RAY_TMPDIR"], ignore_errors=True)
    assert len(list(tdir.iterdir())) == 2
    for d in tdir.iterdir():
        assert RunDir(d).status == "done"
        assert [row["epoch"] for row in read_jsonl(d / "metrics.jsonl")] == [1, 2, 3, 4]


def test_second_sweep_on_a_busy_folder_exits_with_one_line(tmp_path, env):
    path = with_faults(tmp_path, methods={"test_slow": {}}, seeds=[0, 1, 2], train={"epochs": 3})
    first = subprocess.Popen([PY, "-m", "benchmarks.run", str(path)], env=env, cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lock = tmp_path / "results" / "s" / ".lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (lock.exists() and "pid" in lock.read_text()):
        time.sleep(0.1)
    second = sweep(path, env, timeout=600)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2 and second.stdout == ""
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert "is in use by another sweep (pid" in second.stderr
    tdir = tmp_path / "results" / "s" / "trials"
    assert len(list(tdir.iterdir())) == 3
    for d in tdir.iterdir():
        assert [row["epoch"] for row in read_jsonl(d / "metrics.jsonl")] == [1, 2, 3]
        assert RunDir(d).status == "done"


def _files(*roots: Path):
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file() and not p.is_symlink() and not p.name.endswith(".sock"):
                yield p


def test_credentials_reach_workers_but_no_file(tmp_path, env):
    key, token = "planted-wandb-key-" + os.urandom(8).hex(), "planted-hf-token-" + os.urandom(8).hex()
    env = dict(env, WANDB_API_KEY=key, HF_TOKEN=token)
    path = with_faults(tmp_path, methods={"test_secret": {}}, wandb={"mode": "offline", "project": "p"})
    r = sweep(path, env, timeout=600)
    assert r.returncode == 0, r.stderr
    run = next(iter(by_label(tmp_path).values()))
    assert run.result()["method_info"]["key_sha"] == hashlib.sha256(key.encode()).hexdigest()
    ray_logs = list(Path(env["RAY_TMPDIR"]).glob("**/logs"))
    assert ray_logs, "Ray's session logs were not found"
    leaked = [str(p) for p in _files(tmp_path / "results", Path(env["RAY_TMPDIR"]))
              if key.encode() in p.read_bytes() or token.encode() in p.read_bytes()]
    assert leaked == []
