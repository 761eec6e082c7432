"""sweeps/paper/: one sweep per paper result (and a CPU twin of each) that dry-runs here with its cost estimate;
the per-dataset sweep fields they rely on (model, regimes, hyperparameters) and `reproduces`."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks import run
from benchmarks.report.paper_numbers import result_names
from benchmarks.sweep.plan import expand_trials
from benchmarks.sweep.schema import load_sweep
from molere.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
GPU = sorted((ROOT / "sweeps" / "paper").glob("*.yaml"))
TWINS = sorted((ROOT / "sweeps" / "paper" / "twins").glob("*.yaml"))


@pytest.fixture
def no_launch(monkeypatch):
    from benchmarks.sweep import scheduler
    monkeypatch.setattr(scheduler, "run_trials", lambda *a, **k: pytest.fail("a trial was launched"))


def test_one_sweep_and_one_twin_per_result():
    gpu = {load_sweep(p).reproduces for p in GPU}
    assert gpu == {"figure1", "figure2", "table2", "table3", "table4"} <= set(result_names())
    assert {load_sweep(p).reproduces for p in TWINS} == gpu
    for p in GPU:
        text = p.read_text()
        assert "# Our reading of every unrecovered detail" in text and "# Estimated cost: ~" in text, p.name
        assert "GPU-hours" in text and "docs/paper_sweeps.md#cost" in text, p.name


@pytest.mark.parametrize("path", GPU + TWINS, ids=[f"{p.parent.name}/{p.stem}" for p in GPU + TWINS])
def test_paper_sweep_dry_runs(path, capsys, no_launch, tmp_path):
    assert run.main([str(path), "--dry-run", "--results", str(tmp_path)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "would run" in last and int(last.split(": ")[1].split()[0]) >= 12


def test_missing_methods_are_listed_where_the_paper_has_them():
    missing = {"figure1": {"mbr", "rho_loss", "maple", "bilaw"}, "figure2": {"mbr", "rho_loss", "maple", "stablenet"},
               "table2": {"gdw"}, "table3": {"maple", "gdw"}}
    for p in GPU + TWINS:
        want = missing.get(load_sweep(p).reproduces, set())
        assert all(name in p.read_text() for name in want), p


def test_per_dataset_model_regimes_and_hparams():
    sweep = load_sweep(ROOT / "sweeps" / "paper" / "table3.yaml")
    trials = expand_trials(sweep)
    by = {(t.labels["dataset"], t.labels["regime"]) for t in trials}
    assert by == {("cifar10", "instance-0.2"), ("cifar10", "instance-0.4"), ("clothing1m", "clean")}
    models = {t.labels["dataset"]: t.config.model.name for t in trials}
    assert models == {"cifar10": "resnet_small", "clothing1m": "timm"}
    fig1 = expand_trials(load_sweep(ROOT / "sweeps" / "paper" / "figure1.yaml"))
    scope = {(t.labels["dataset"], t.config.method.hparams.get("lookahead_scope")) for t in fig1
             if t.labels["method"] == "molere"}
    assert ("imagenet", "head") in scope and ("cifar100", "all") in scope


def _write(tmp_path, **changes) -> Path:
    spec = {"name": "s", "datasets": [{"name": "digits"}], "model": {"name": "mlp"}, "methods": {"erm": {}},
            "train": {"epochs": 1}, **changes}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_bad_paper_fields_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"reproduces: .*one of figure1, figure2, table2, table3, table4"):
        load_sweep(_write(tmp_path, reproduces="figure9"))
    with pytest.raises(ConfigError, match=r"datasets.digits.hparams.mwn: not a method of this sweep"):
        load_sweep(_write(tmp_path, datasets=[{"name": "digits", "hparams": {"mwn": {"meta_lr": 0.1}}}]))
    with pytest.raises(ConfigError, match=r"datasets.digits.model.name: unknown model 'mpl'"):
        load_sweep(_write(tmp_path, datasets=[{"name": "digits", "model": {"name": "mpl"}}]))
    with pytest.raises(ConfigError, match=r"methods.erm"):
        load_sweep(_write(tmp_path, datasets=[{"name": "digits", "hparams": {"erm": {"bogus": 1}}}]))
