"""Live W&B trials (offline runs read back): per-step history at the configured interval, the config's
regime / hparams_id / env keys, system metrics, store artifacts, resuming a killed trial without duplicate
steps, trial log files, visible W&B failures and the wandb version check."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.trial.store import RunDir
from benchmarks.sweep.plan import expand_trials
from benchmarks.sweep.schema import load_sweep
from benchmarks.sweep.stored import write_plan
from benchmarks.sweep.worker import LOG_FILE, run_logged, run_one, trial_spec
from benchmarks.wandb_io.log import wandb_settings
from benchmarks.wandb_io.reader import read_attempts, run_dirs
from molere.registry import register_method
from molere.trainer import Callback, Trainer

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
import os, signal, time
from molere.registry import register_method
from molere.trainer import Trainer


@register_method("test_die_once")
class DieOnce(Trainer):
    """ERM that kills its own process (SIGKILL) before step 17 the first time it runs (after a second,
    so that wandb has written what was logged to the run file)."""
    def training_step(self, batch):
        marker = os.environ["DIE_MARKER"]
        if self.global_step == 16 and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().training_step(batch)
'''


@register_method("test_raise_live")
class RaiseLive(Trainer):
    """Raises at the start of epoch 1."""
    def on_epoch_start(self, epoch):
        raise RuntimeError("boom in a live trial")


def make_sweep(tmp_path, methods, **over):
    d = {"name": "w", "results_dir": str(tmp_path / "results"),   # 9 steps per epoch (no selection split)
         "datasets": [{"name": "digits", "options": {"selection_fraction": 0}}],
         "regimes": [{"kind": "symmetric", "rate": 0.2}],
         "model": {"name": "mlp", "options": {"hidden": [16]}}, "methods": methods, "seeds": [0],
         "train": {"epochs": 2, "batch_size": 128}, "resources": {"cpu": 1},
         "wandb": {"mode": "offline", "project": "p", "log_every_steps": 4, "stats_interval_s": 0.2,
                   "flush_interval_s": 0.2}}
    d.update(over)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(d))
    sweep = load_sweep(path)
    plan = expand_trials(sweep)
    write_plan(sweep, plan)
    return sweep, sorted(plan, key=lambda t: t.erm_id != t.trial_id)


def history(sweep, trial_id) -> dict:
    return read_attempts(run_dirs(sweep.directory)[trial_id])


def test_step_callback_sees_every_optimizer_step():
    from benchmarks.data.load import DatasetConfig, load_task
    from benchmarks.models import build_model
    from benchmarks.data.regimes import RegimeConfig
    from molere.config import TrainConfig
    from molere.trainer import RunContext, Trainer

    class Steps(Callback):
        def __init__(self):
            self.rows = []

        def on_step_end(self, trainer, step, metrics):
            self.rows.append((step, trainer.global_step, dict(metrics)))

    task = load_task(DatasetConfig(name="digits"), RegimeConfig(), 0)
    rec = Steps()
    t = Trainer(build_model("mlp", 10, task.input_shape, {"hidden": [8]}), task,
                TrainConfig(epochs=2, batch_size=256, lr=0.1), context=RunContext(callbacks=[rec]))
    t.fit()
    assert [r[0] for r in rec.rows] == list(range(1, t.global_step + 1)) and t.global_step > 4
    assert all(step == gs for step, gs, _ in rec.rows)
    assert all({"train/step_loss", "lr"} <= set(m) and m["train/step_loss"] > 0 for _, _, m in rec.rows)
    assert sum(m["train/batch_size"] for _, _, m in rec.rows) == 2 * len(t.train_set)


def test_offline_run_has_step_history_config_env_system_metrics_and_artifact(tmp_path):
    sweep, plan = make_sweep(tmp_path, {"erm": {}, "mwn": {}})
    settings = wandb_settings(sweep)
    for t in plan:
        assert run_one(trial_spec(t, sweep, settings))["status"] == "done"
    mwn = next(t for t in plan if t.labels["method"] == "mwn")
    run = RunDir(sweep.directory / "trials" / mwn.trial_id)
    w = history(sweep, mwn.trial_id)
    steps = [r["_step"] for r in w["history"] if "train/step_loss" in r]
    total = [r["_step"] for r in w["history"] if "test/acc" in r][-1]
    assert steps == list(range(4, total + 1, 4)) and len(steps) >= 3
    row = next(r for r in w["history"] if "train/step_loss" in r)
    for key in ("lr", "perf/images_per_s", "weights/param_norm", "weights/grad_norm", "train/step_weight_mean"):
        assert key in row and row[key] == row[key], key
    assert row["perf/images_per_s"] > 0 and row["weights/param_norm"] > 0
    epochs = [r for r in w["history"] if "test/acc" in r]
    assert [r["epoch"] for r in epochs] == [1, 2] and epochs[-1]["_step"] == total
    assert w["axes"]["test/acc"] == "epoch" and w["axes"]["train/step_loss"] == "trainer/step"   # define_metric
    assert w["axes"]["perf/images_per_s"] == "trainer/step" and row["trainer/step"] == row["_step"]
    cfg = w["config"]
    assert cfg["regime"] == "symmetric-0.2" and cfg["regime_config"]["rate"] == 0.2
    assert cfg["hparams_id"] == mwn.labels["hparams_id"] and cfg["method"]["name"] == "mwn"
    env = cfg["env"]
    assert env["packages"]["torch"] and env["packages"]["wandb"] and env["host"] and env["device"] == "cpu"
    assert "commit" in env["git"]
    assert w["system"] and any("cpu" in k or "memory" in k for k in w["system"][0])
    arts = {a["type"]: a for a in w["artifacts"]}
    assert {"config.json", "result.json", "metrics.jsonl", "margins.npz"} <= set(arts["trial-result"]["files"])
    assert w["summary"]["final/test/acc"] == pytest.approx(run.result()["metrics"]["test/acc"])
    log = run.file(LOG_FILE).read_text()
    assert f"=== trial {mwn.trial_id} attempt started" in log and f"=== trial {mwn.trial_id} done" in log


def test_killed_trial_resumes_its_run_without_duplicate_steps(tmp_path):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "die_plugin.py").write_text(PLUGIN)
    sys.path.insert(0, str(tmp_path / "plug"))
    try:
        sweep, plan = make_sweep(tmp_path, {"test_die_once": {}}, plugins=["die_plugin"],
                                 store={"checkpoint": True}, regimes=[{"kind": "clean"}])
    finally:
        sys.path.remove(str(tmp_path / "plug"))
    (t,) = plan
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(trial_spec(t, sweep, wandb_settings(sweep))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "plug"), str(ROOT)]),
               DIE_MARKER=str(tmp_path / "died"), WANDB_MODE="offline", OMP_NUM_THREADS="1")
    env.pop("WANDB_SERVICE", None)     # this test process's wandb-core: each attempt starts its own, as workers do
    code = "import json, sys; from benchmarks.sweep.worker import run_one; print(run_one(json.load(open(sys.argv[1]))))"
    first = subprocess.run([sys.executable, "-c", code, str(spec)], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    # the trial's process was SIGKILLed; run_one, its parent, survives and records the death
    assert first.returncode == 0 and "SIGKILL" in first.stdout and (tmp_path / "died").exists(), first.stderr
    run = RunDir(sweep.directory / "trials" / t.trial_id)
    assert run.status == "failed" and run.file("checkpoint.pt").exists()
    # on disk: steps 4, 8, 9 (epoch 1, the checkpoint) and 12; step 16 was still an open row in the killed process
    (attempt,) = run_dirs(sweep.directory)[t.trial_id]
    assert [r["_step"] for r in read_attempts([attempt])["history"]] == [4, 8, 9, 12]
    second = subprocess.run([sys.executable, "-c", code, str(spec)], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0 and "'done'" in second.stdout, second.stderr
    dirs = run_dirs(sweep.directory)[t.trial_id]
    assert len(dirs) == 2                             # one local run directory per attempt, same run id
    w = read_attempts(dirs)
    steps = [r["_step"] for r in w["history"]]
    assert steps == sorted(set(steps)), steps        # strictly increasing over both attempts
    assert steps == [4, 8, 9, 12, 16, 18]             # resumed at step 9: 12 not again, 16 (lost) logged now
    assert [r["epoch"] for r in w["history"] if "test/acc" in r] == [1, 2]
    log = run.file(LOG_FILE).read_text()
    assert log.count(f"=== trial {t.trial_id} attempt started") == 2 and "resumed: steps up to 12" in log


def test_failing_trial_log_has_traceback_and_wandb_failures_are_visible(tmp_path, monkeypatch):
    import wandb
    sweep, plan = make_sweep(tmp_path, {"test_raise_live": {}})
    (t,) = plan

    def broken(*a, **k):
        raise RuntimeError("no W&B today")
    monkeypatch.setattr(wandb, "init", broken)
    out = run_logged(trial_spec(t, sweep, wandb_settings(sweep)))   # in this process: the patched wandb, the test method
    assert out["status"] == "failed" and out["error"] == "RuntimeError: boom in a live trial"
    log = RunDir(sweep.directory / "trials" / t.trial_id).file(LOG_FILE).read_text()
    assert "W&B init failed, trial continues: RuntimeError: no W&B today" in log
    assert "Traceback (most recent call last)" in log and "in on_epoch_start" in log
    assert f"=== trial {t.trial_id} failed: RuntimeError: boom in a live trial" in log


def test_old_wandb_is_a_clear_error_before_anything_starts(tmp_path, monkeypatch, capsys):
    from benchmarks import run
    from benchmarks.wandb_io import log
    with pytest.raises(ValueError, match=r"wandb 0\.18\.7 is installed, the W&B logging needs wandb>=0\.19\.10"):
        log.check_wandb("0.18.7")
    log.check_wandb("0.19.10")
    monkeypatch.setattr(run, "check_wandb", lambda: log.check_wandb("0.18.7"))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "datasets": [{"name": "digits"}], "methods": {"erm": {}},
                                    "results_dir": str(tmp_path), "wandb": {"mode": "offline"}}))
    with pytest.raises(SystemExit) as e:
        run.main([str(path)])
    assert e.value.code == 2 and "wandb.mode: wandb 0.18.7 is installed" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_reader_keeps_nested_config_keys():
    from wandb.proto import wandb_internal_pb2 as pb

    from benchmarks.wandb_io.reader import _config
    items = [pb.ConfigItem(key="lr", value_json="0.1"),
             pb.ConfigItem(nested_key=["env", "git", "commit"], value_json='"abc"'),
             pb.ConfigItem(nested_key=["env", "host"], value_json='"h"'),
             pb.ConfigItem(nested_key=["_wandb", "visualize", "plot"], value_json="{}"),
             pb.ConfigItem(key="_wandb", value_json="{}")]
    out = {}
    _config(items, out)
    assert out == {"lr": 0.1, "env": {"git": {"commit": "abc"}, "host": "h"}}
