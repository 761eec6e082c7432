"""Step-level checkpoints: an interrupted trial resumes mid-epoch and ends bit for bit like an
uninterrupted one (every registered method, dropout and BatchNorm on); unsafe, corrupt or foreign
checkpoints are discarded, and none is read when checkpointing is off."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import catalog  # noqa: F401  (registers every method)
from benchmarks.trial.config import TrialConfig, resolve, trial_id
from benchmarks.trial.store import CheckpointDiscarded, RunDir
from benchmarks.trial.execute import run_trial
from molere.registry import METHODS
from molere.trainer import Callback

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = [n for n in METHODS.names() if not n.startswith("test_")]
HPARAMS = {"fsr": {"meta_warmup_epochs": 1, "meta_batch_size": 32}, "molere": {"meta_every": 2},
           "jtt": {"up_weight": 1}, "rho_loss": {"il_epochs": 2}}   # JTT: the step counts below stay ERM's
STEPS_PER_EPOCH = 9   # 1131 digits training examples (molere: 1131 of its pool) in batches of 128


class Interrupted(KeyboardInterrupt):
    """What Ctrl-C raises (a BaseException: the trial records a failure and re-raises)."""


class InterruptAt(Callback):
    """Raises at step `k` (after the step, before any later checkpoint): a crash mid-epoch."""

    def __init__(self, k: int):
        self.k = k

    def on_step_end(self, trainer, step, metrics):
        if step == self.k:
            raise Interrupted(f"interrupted after step {step}")


def config(method: str, **train) -> TrialConfig:
    hp = dict(HPARAMS.get(method, {}))
    if "meta_batch_size" in METHODS.get(method).Hparams.model_fields:
        hp.setdefault("meta_batch_size", 32)   # several passes of the meta stream per epoch
    return TrialConfig.model_validate({
        "dataset": {"name": "digits", "options": {"selection_fraction": 0}},   # the step counts below
        "regime": {"kind": "symmetric", "rate": 0.2},
        "model": {"name": "mlp", "options": {"hidden": [32], "dropout": 0.3, "batchnorm": True}},
        "method": {"name": method, "hparams": hp},
        "train": {"epochs": 2, "batch_size": 128, "lr": 0.05, "num_workers": 0, **train}, "seed": 3})


def outcome(run: RunDir) -> tuple[dict, dict, dict, dict]:
    result = run.result()
    metrics = {k: v for k, v in result["metrics"].items() if "time" not in k}
    weights = torch.load(run.file("checkpoint.pt"), weights_only=True)["state"]["model"]
    return metrics, result["method_info"], run.margins(), weights


def assert_same(a, b) -> None:
    (ma, ia, za, wa), (mb, ib, zb, wb) = a, b
    assert ma == mb
    assert ia == ib
    assert za.keys() == zb.keys() and all(np.array_equal(za[k], zb[k]) for k in za)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def erm_store(tmp_path_factory):
    """A store holding the ERM trial of the key, which the train-twice methods reuse (no in-process ERM)."""
    root = tmp_path_factory.mktemp("store")
    cfg = resolve(config("erm"))
    run_trial(cfg, root / trial_id(cfg))
    return root


@pytest.mark.parametrize("method", BUILTIN)
def test_interrupted_trial_resumes_mid_epoch_bit_for_bit(tmp_path, method, erm_store):
    cfg = config(method)
    straight = RunDir(tmp_path / "straight")
    run_trial(cfg, straight.path, checkpoint=True, checkpoint_steps=4, store_root=erm_store)
    broken = RunDir(tmp_path / "broken")
    k = STEPS_PER_EPOCH + 6           # epoch 2, after the step-12 checkpoint
    with pytest.raises(Interrupted):
        run_trial(cfg, broken.path, checkpoint=True, checkpoint_steps=4, callbacks=(InterruptAt(k),),
                  store_root=erm_store)
    assert broken.status == "failed"
    saved = broken.load_checkpoint(broken.config()["trial_id"])
    assert saved["global_step"] == 12 and saved["epoch"] == 1 and saved["progress"] is not None
    run_trial(cfg, broken.path, checkpoint=True, checkpoint_steps=4, store_root=erm_store)
    assert_same(outcome(straight), outcome(broken))
    assert [r["epoch"] for r in broken.metrics()] == [1, 2]


def test_resume_from_a_step_checkpoint_at_the_end_of_an_epoch(tmp_path):
    """Step 9 is the last step of epoch 1: a run resumed from its step checkpoint (epoch 1's end hooks
    not run yet) finishes epoch 1 without training it again."""
    cfg = config("erm")
    straight = RunDir(tmp_path / "straight")
    run_trial(cfg, straight.path, checkpoint=True, checkpoint_steps=STEPS_PER_EPOCH)
    broken = RunDir(tmp_path / "broken")
    with pytest.raises(Interrupted):
        run_trial(cfg, broken.path, checkpoint=True, checkpoint_steps=STEPS_PER_EPOCH,
                  callbacks=(InterruptAt(STEPS_PER_EPOCH),))
    state = broken.load_checkpoint(broken.config()["trial_id"])
    assert state["global_step"] == STEPS_PER_EPOCH and state["epoch"] == 0 and state["progress"] is not None
    run_trial(cfg, broken.path, checkpoint=True, checkpoint_steps=STEPS_PER_EPOCH)
    assert_same(outcome(straight), outcome(broken))
    assert [r["epoch"] for r in broken.metrics()] == [1, 2]


def test_resume_is_not_vacuous(tmp_path):
    """Control: resuming with the global RNG (dropout) or a stream position lost gives a different run."""
    cfg = config("mwn")
    straight = RunDir(tmp_path / "straight")
    run_trial(cfg, straight.path, checkpoint=True, checkpoint_steps=4)
    for lose in ("rng", "streams"):
        broken = RunDir(tmp_path / lose)
        with pytest.raises(Interrupted):
            run_trial(cfg, broken.path, checkpoint=True, checkpoint_steps=4, callbacks=(InterruptAt(13),))
        tid = broken.config()["trial_id"]
        state = broken.load_checkpoint(tid)
        state.pop(lose)
        broken.save_checkpoint(state, tid)
        run_trial(cfg, broken.path, checkpoint=True, checkpoint_steps=4)
        with pytest.raises(AssertionError):
            assert_same(outcome(straight), outcome(broken))


KILLER = """
import os, signal, sys
import torch
torch.set_num_threads(int(sys.argv[4]))   # the parent's: same reduction order, same floats
from benchmarks.trial.config import TrialConfig, resolve, trial_id
from benchmarks.trial.execute import run_trial
from molere.trainer import Callback

class Kill(Callback):
    def on_step_end(self, trainer, step, metrics):
        if step == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)

cfg = TrialConfig.model_validate_json(open(sys.argv[1]).read())
run_trial(cfg, sys.argv[2], checkpoint=True, checkpoint_steps=4, callbacks=(Kill(),))
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_equals_uninterrupted(tmp_path):
    cfg = config("molere")
    straight = RunDir(tmp_path / "straight")
    run_trial(cfg, straight.path, checkpoint=True, checkpoint_steps=4)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path / "cfg.json"), str(tmp_path / "k"), "15",
                             str(torch.get_num_threads())],
                            cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    broken = RunDir(tmp_path / "k")
    assert broken.status == "incomplete"
    run_trial(cfg, broken.path, checkpoint=True, checkpoint_steps=4)
    assert_same(outcome(straight), outcome(broken))


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = ""


@pytest.mark.parametrize("fmt,checkpoint", [("torch", True), ("pickle", True), ("torch", False)])
def test_planted_malicious_checkpoint_does_not_execute(tmp_path, fmt, checkpoint):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    cfg = config("erm", epochs=1)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    blob = {"format": "molere-bench-checkpoint/1", "trial_id": None, "state": Payload()}
    if fmt == "torch":
        torch.save(blob, run.file("checkpoint.pt"))
    else:
        run.file("checkpoint.pt").write_bytes(pickle.dumps(blob))
    if checkpoint:
        with pytest.warns(CheckpointDiscarded, match="restarts from scratch"):
            result = run_trial(cfg, run.path, checkpoint=True)
    else:
        result = run_trial(cfg, run.path, checkpoint=False)
    assert not Path(MARKER).exists()
    assert result["status"] == "done" and run.status == "done"
    assert [r["epoch"] for r in run.metrics()] == [1]


def test_corrupt_or_foreign_checkpoint_is_discarded_and_the_trial_restarts(tmp_path):
    cfg = config("erm", epochs=1)
    first = RunDir(tmp_path / "a")
    run_trial(cfg, first.path, checkpoint=True)
    reference = outcome(first)
    other = RunDir(tmp_path / "other")
    run_trial(config("erm", epochs=1, lr=0.01), other.path, checkpoint=True)
    for damage in ("truncate", "foreign"):
        run = RunDir(tmp_path / damage)
        run_trial(cfg, run.path, checkpoint=True)
        run.file("done").unlink()
        blob = first.file("checkpoint.pt").read_bytes()
        if damage == "truncate":
            run.file("checkpoint.pt").write_bytes(blob[: len(blob) // 2])
        else:
            run.file("checkpoint.pt").write_bytes(other.file("checkpoint.pt").read_bytes())
        with pytest.warns(CheckpointDiscarded):
            run_trial(cfg, run.path, checkpoint=True)
        assert_same(reference, outcome(run))   # restarted from scratch: the same run


def test_no_checkpoint_is_read_when_checkpointing_is_off(tmp_path, monkeypatch):
    cfg = config("erm", epochs=1)
    run = RunDir(tmp_path / "run")
    run_trial(cfg, run.path, checkpoint=True)
    run.file("done").unlink()
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a checkpoint was read"))
    run_trial(cfg, run.path, checkpoint=False)
    assert not run.file("checkpoint.pt").exists() and run.status == "done"


def test_checkpoints_every_n_steps_and_at_epoch_end(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(RunDir, "save_checkpoint", lambda self, state, tid=None: saved.append(state["global_step"]))
    run_trial(config("erm"), tmp_path / "run", checkpoint=True, checkpoint_steps=4)
    assert saved == [4, 8, 9, 12, 16, 18]
    saved.clear()
    run_trial(config("erm"), tmp_path / "off", checkpoint=False, checkpoint_steps=4)
    assert saved == []


# ---- devices ----------------------------------------------------------------------------------------
def test_device_auto_logs_its_choice(capsys):
    from benchmarks.trial.execute import resolve_device
    chosen = resolve_device("auto")
    assert chosen == ("cuda" if torch.cuda.is_available() else "cpu")
    assert f"device auto -> {chosen}" in capsys.readouterr().err
    assert resolve_device("cpu") == "cpu" and capsys.readouterr().err == ""


def test_gpu_sweep_without_a_gpu_stops_before_ray(tmp_path, capsys, monkeypatch):
    from benchmarks import run
    from benchmarks.sweep import scheduler
    monkeypatch.setattr(scheduler, "run_trials", lambda *a, **k: pytest.fail("Ray was started"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndatasets: [{name: digits}]\nmethods: {erm: {}}\nresources: {cpu: 1, gpu: 1}\n")
    with pytest.raises(SystemExit) as exc:
        run.main([str(path), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert "asks for cpu=1, gpu=1 but this machine has" in err and "0 GPUs" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_file_backed_trial_with_workers_resumes_bit_for_bit(tmp_path):
    """Worker-backed streams over image files with random augmentations: resume equals the straight run."""
    from tests import fakes
    root = fakes.make_fake_imagenet(tmp_path / "imagenet", train_per_class=12, val_per_class=3, size=20)
    cfg = TrialConfig.model_validate({
        "dataset": {"name": "imagenet", "root": root, "options": {"image_size": 16, "val_fraction": 0.2}},
        "model": {"name": "mlp", "options": {"hidden": [16], "dropout": 0.2}},
        "method": {"name": "molere", "hparams": {"meta_batch_size": 4, "meta_every": 2}},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "num_workers": 2}, "seed": 1})
    straight = RunDir(tmp_path / "straight")
    run_trial(cfg, straight.path, checkpoint=True, checkpoint_steps=3)
    broken = RunDir(tmp_path / "broken")
    with pytest.raises(Interrupted):
        run_trial(cfg, broken.path, checkpoint=True, checkpoint_steps=3, callbacks=(InterruptAt(7),))
    run_trial(cfg, broken.path, checkpoint=True, checkpoint_steps=3)
    assert_same(outcome(straight), outcome(broken))
