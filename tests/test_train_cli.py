"""`benchmarks.train` says what it does: run folder first, one line per epoch, resume from its checkpoint on
a rerun (or refuse without --force), a W&B run like a sweep trial, every flag with help and default."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from benchmarks import train
from benchmarks.trial import console
from benchmarks.trial.store import RunDir

ARGS = ["--dataset", "digits", "--model", "mlp", "--method", "erm", "--epochs", "3", "--seed", "1"]


def lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_prints_the_folder_first_then_one_line_per_epoch(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main([*ARGS, "--out", str(out)]) == 0
    shown = lines(capsys)
    assert shown[0] == f"run folder: {out}"
    epochs = [s for s in shown if s.startswith("epoch ")]
    assert [s.split()[1] for s in epochs] == ["1/3", "2/3", "3/3"]
    for s in epochs:
        assert re.search(r"loss \d+\.\d{4}  lr [\d.e-]+", s) and "img/s" in s, s
    assert "test acc" in epochs[-1] and epochs[-1].endswith("done") and "ETA" in epochs[0]
    assert RunDir(out).status == "done"


def test_epoch_line_format():
    line = console.epoch_line(3, 20, {"train/loss": 0.41234, "lr": 0.0951, "val/acc": 0.912, "test/acc": 0.908,
                                      "train/acc": 0.99}, 1234, 1.0, 75)
    assert line == "epoch 3/20  loss 0.4123  lr 0.0951  val acc 91.20  test acc 90.80  1,234 img/s  ETA 1:15"


def test_rerun_refuses_a_finished_run_and_another_runs_folder_unless_forced(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert train.main([*ARGS, "--out", out]) == 0
    capsys.readouterr()
    for extra in ([], ["--lr", "0.05"]):
        with pytest.raises(SystemExit) as exc:
            train.main([*ARGS, *extra, "--out", out])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and len(err.splitlines()) == 1 and "--force" in err, err
    assert train.main([*ARGS, "--lr", "0.05", "--out", out, "--force"]) == 0
    assert "(--force: from scratch)" in lines(capsys)[0]
    assert RunDir(out).config()["config"]["train"]["lr"] == 0.05
    assert [r["epoch"] for r in RunDir(out).metrics()] == [1, 2, 3]


def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_same_result(tmp_path, capsys, monkeypatch):
    straight = tmp_path / "straight"
    assert train.main([*ARGS, "--out", str(straight)]) == 0
    real = console.ConsoleProgress.on_epoch_end

    def stop_after_first(self, trainer, epoch, metrics):
        real(self, trainer, epoch, metrics)
        if epoch == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(console.ConsoleProgress, "on_epoch_end", stop_after_first)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train.main([*ARGS, "--out", str(out)])
    assert RunDir(out).status == "failed" and RunDir(out).file("checkpoint.pt").exists()
    monkeypatch.setattr(console.ConsoleProgress, "on_epoch_end", real)
    capsys.readouterr()
    assert train.main([*ARGS, "--out", str(out)]) == 0
    shown = lines(capsys)
    assert shown[0].endswith("(resuming from its checkpoint)")
    assert [s.split()[1] for s in shown if s.startswith("epoch ")] == ["2/3", "3/3"]
    assert [r["epoch"] for r in RunDir(out).metrics()] == [1, 2, 3]
    a, b = RunDir(straight).result()["metrics"], RunDir(out).result()["metrics"]
    assert a["test/acc"] == b["test/acc"] and a["train/loss"] == b["train/loss"]


def test_logs_a_wandb_run_like_a_sweep_trial(tmp_path, monkeypatch):
    from benchmarks.wandb_io.reader import find_runs, read_run
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    assert train.main([*ARGS, "--out", str(out)]) == 0
    tid = RunDir(out).config()["trial_id"]
    runs = find_runs(out)
    assert list(runs) == [tid]
    r = read_run(runs[tid])
    assert r["run"]["job_type"] == "erm" and r["config"]["trial_id"] == tid and "env" in r["config"]
    assert [h["epoch"] for h in r["history"] if "train/loss" in h] == [1, 2, 3]
    assert r["summary"]["final/test/acc"] == RunDir(out).result()["metrics"]["test/acc"]


def test_every_flag_has_help_text_and_a_default():
    out = subprocess.run([sys.executable, "-m", "benchmarks.train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    options = out.stdout.split("options:")[1]
    text = " ".join(options.split())
    flags = re.findall(r"(--[a-z-]+)", options)
    assert {"--out", "--force", "--results", "--store", "--wandb-mode", "--epochs", "--lr", "--seed"} <= set(flags)
    for flag in ("--dataset", "--regime", "--method", "--seed", "--out", "--results", "--wandb-mode", "--epochs",
                 "--lr", "--noise-rate", "--model"):
        block = text.split(f" {flag} ", 1)[1][:300]
        assert "default" in block, (flag, block)
