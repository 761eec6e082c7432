"""One thread policy for every entry point: `benchmarks.train --config TRIAL` reproduces a sweep trial (run by
the sweep worker in its own process) bit for bit — test accuracy and every margin."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.sweep.plan import expand_trials
from benchmarks.sweep.schema import load_sweep
from benchmarks.sweep.worker import run_one, trial_spec
from benchmarks.trial.store import RunDir
from tests.test_sweep_schema import with_, write

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_train_reproduces_a_sweep_trial_exactly(tmp_path):
    d = with_(results_dir=str(tmp_path / "res"), datasets=[{"name": "mnist1d", "options": {"num_samples": 1000}}],
              methods={"molere": {}}, model={"name": "mlp", "options": {"hidden": [256, 256]}},
              train={"epochs": 3, "batch_size": 64}, resources={"cpu": 1})
    sweep = load_sweep(write(tmp_path, d))
    trial = next(t for t in expand_trials(sweep) if t.labels["method"] == "molere")
    assert run_one(trial_spec(trial, sweep, None))["status"] == "done"        # the worker, in its own process
    swept = RunDir(sweep.directory / "trials" / trial.trial_id)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)                                          # a fresh process: torch's default
    out = subprocess.run([sys.executable, "-m", "benchmarks.train", "--config", str(swept.path),
                          "--out", str(tmp_path / "rerun")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    rerun = RunDir(tmp_path / "rerun")
    a, b = swept.result(), rerun.result()
    assert a["threads"] == b["threads"] == 1                                  # resources.cpu, recorded and reused
    assert a["metrics"]["test/acc"] == b["metrics"]["test/acc"]
    ma, mb = swept.margins(), rerun.margins()
    assert sorted(ma) == sorted(mb) and all(np.array_equal(ma[k], mb[k]) for k in ma)
    assert json.loads((tmp_path / "rerun" / "config.json").read_text())["trial_id"] == trial.trial_id
