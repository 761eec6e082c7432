"""Filters are views: `--only` / `--set` never shrink or rewrite a store's plan.json / sweep.yaml; a subset run
adds its trials; a --set that changes planned trials is refused; the report renders the whole store or the
subset asked (no Ray: the scheduler is replaced by a fake that completes trials)."""
from __future__ import annotations

import json

import pytest
import yaml

from benchmarks import run
from benchmarks.report.__main__ import main as report_main
from benchmarks import orchestrate
from benchmarks.sweep import scheduler
from benchmarks.sweep.stored import merge_plan
from benchmarks.trial.store import RunDir
from tests.fakes import finish_synthetic

SWEEP = {"name": "q", "datasets": [{"name": "digits"}], "model": {"name": "mlp"},
         "methods": {"erm": {}, "mwn": {"meta_source": "train_per_class"}},   # no same-data reference to add
         "seeds": [0, 1], "train": {"epochs": 1}, "wandb": {"mode": "disabled"}}


@pytest.fixture
def fake_runs(monkeypatch):
    """run_trials completes every spec it gets (test acc by method and seed) and records what it ran."""
    ran = []

    def fake(specs, waits, **kw):
        for spec in specs:
            r = RunDir(spec["out_dir"])
            r.start({"trial_id": spec["trial_id"], "config": spec["config"]})
            acc = 0.8 + 0.05 * (spec["labels"]["method"] == "mwn") + 0.01 * spec["labels"]["seed"]
            finish_synthetic(r, {"trial_id": spec["trial_id"], "status": "done", "metrics": {"test/acc": acc}})
            ran.append(spec["trial_id"])
        return {}
    monkeypatch.setattr(scheduler, "run_trials", fake)
    monkeypatch.setattr(orchestrate, "report", lambda sweep, settings, prog: None)
    return ran


def plan_of(root) -> list[dict]:
    return json.loads((root / "q" / "plan.json").read_text())


def test_a_subset_run_never_shrinks_the_plan_and_adds_its_trials(tmp_path, fake_runs):
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    res = tmp_path / "res"
    assert run.main([str(path), "--results", str(res)]) == 0          # the whole sweep: 2 methods x 2 seeds
    first = plan_of(res)
    sweep_yaml = (res / "q" / "sweep.yaml").read_text()
    assert len(first) == 4 and len(fake_runs) == 4
    assert run.main([str(path), "--results", str(res), "--only", "method=erm,mwn", "--set", "seeds=[0]"]) == 0
    assert plan_of(res) == first and (res / "q" / "sweep.yaml").read_text() == sweep_yaml   # the README example
    assert len(fake_runs) == 4                                                            # all done already
    assert run.main([str(path), "--results", str(res), "--set", "seeds=[0,1,2]", "--only", "seed=2"]) == 0
    grown = plan_of(res)
    assert grown[:4] == first and len(grown) == 6 and len(fake_runs) == 6   # seed 2 added, nothing removed
    assert sorted({e["labels"]["seed"] for e in grown}) == [0, 1, 2]
    assert (res / "q" / "sweep.yaml").read_text() == sweep_yaml


def test_a_set_that_changes_planned_trials_is_refused_before_anything_runs(tmp_path, fake_runs, capsys):
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    res = tmp_path / "res"
    assert run.main([str(path), "--results", str(res)]) == 0
    before, n = plan_of(res), len(fake_runs)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run.main([str(path), "--results", str(res), "--set", "train.epochs=2"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "another --results folder" in err, err
    assert plan_of(res) == before and len(fake_runs) == n


def test_an_edited_sweep_file_replaces_the_changed_trials_and_says_so(tmp_path, fake_runs, capsys):
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    res = tmp_path / "res"
    assert run.main([str(path), "--results", str(res)]) == 0
    old = {e["trial_id"] for e in plan_of(res)}
    path.write_text(yaml.safe_dump({**SWEEP, "train": {"epochs": 2}}))
    assert run.main([str(path), "--results", str(res)]) == 0
    assert "changed the configuration of 4 planned trials" in capsys.readouterr().err
    new = plan_of(res)
    assert len(new) == 4 and not old & {e["trial_id"] for e in new}


def test_merge_keeps_order_and_old_entries():
    e = lambda tid, m, s: {"trial_id": tid, "labels": {"dataset": "d", "regime": "c", "method": m, "seed": s,  # noqa: E731
                                                        "hparams_id": "h"}}
    old = [e("a", "erm", 0), e("b", "mwn", 0)]
    merged, notes = merge_plan(old, [e("b", "mwn", 0), e("c", "mwn", 1)], filtered=True, where="x")
    assert [x["trial_id"] for x in merged] == ["a", "b", "c"] and notes == []
    with pytest.raises(Exception, match="changes the configuration of 1 trials"):
        merge_plan(old, [e("z", "mwn", 0)], filtered=True, where="x")


def test_report_renders_the_whole_store_or_the_subset_asked(tmp_path, fake_runs, capsys):
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    res = tmp_path / "res"
    assert run.main([str(path), "--results", str(res)]) == 0
    store = res / "q"
    assert report_main([str(store)]) == 0
    assert "4 done" in capsys.readouterr().out
    assert report_main([str(store), "--only", "method=mwn", "seed=0"]) == 0
    out = capsys.readouterr().out
    assert "2 done" in out and "report-method-mwn_seed-0" in out     # mwn seed 0 with its ERM partner
    trials = (store / "report-method-mwn_seed-0" / "trials.csv").read_text()
    assert trials.count("\n") == 3 and (store / "report" / "index.html").exists()
    with pytest.raises(SystemExit) as exc:
        report_main([str(store), "--only", "method=nope"])
    assert exc.value.code == 2
    assert "method: nope not in this store" in capsys.readouterr().err


def test_a_subset_run_on_a_fresh_store_plans_only_its_trials(tmp_path, fake_runs):
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    res = tmp_path / "res"
    assert run.main([str(path), "--results", str(res), "--only", "method=erm", "seed=1"]) == 0
    assert [(e["labels"]["method"], e["labels"]["seed"]) for e in plan_of(res)] == [("erm", 1)]
    assert run.main([str(path), "--results", str(res)]) == 0                 # the rest added, seed 1 ERM kept
    assert len(plan_of(res)) == 4 and plan_of(res)[0]["labels"]["seed"] == 1 and len(fake_runs) == 4
