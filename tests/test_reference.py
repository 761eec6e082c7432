"""The ERM reference as one typed service: methods declare what they need, the planner schedules exactly
that (no out-of-fold model unless a planned method asks; exactly K when one does), out-of-fold models are
evaluated once and checkpointed like any trial, and the store and in-process paths give the same margins."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.sweep import references
from benchmarks.sweep.plan import expand_trials
from benchmarks.sweep.schema import load_sweep
from benchmarks.trial.config import TrialConfig, erm_reference_config, resolve, trial_id
from benchmarks.trial.execute import Checkpointer, run_trial
from benchmarks.trial.reference import StoreReference, oof_dir, run_fold
from benchmarks.trial.store import RunDir
from molere.config import ConfigError, TrainConfig
from molere.reference import ReferenceNeeds
from molere.reference_runs import InProcessReference, crossfit_margins
from molere.registry import METHODS
from molere.trainer import RunContext, Trainer
from tests.test_sweep_run import env, sweep, sweep_file  # noqa: F401  (the sweep fixture and helpers)

BASE = {"dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [16]}},
        "train": {"epochs": 2, "batch_size": 128}, "seed": 0}


def cfg_of(method: str, **hp) -> TrialConfig:
    return resolve(TrialConfig.model_validate({**BASE, "method": {"name": method, "hparams": hp}}))


def plan(tmp_path, methods: dict, seeds=(0, 1)):
    (tmp_path / "s.yaml").write_text(json.dumps({"name": "s", "results_dir": str(tmp_path / "r"),
                                                 "datasets": [{"name": "digits"}], "methods": methods,
                                                 "seeds": list(seeds), "train": {"epochs": 1}}))
    return expand_trials(load_sweep(tmp_path / "s.yaml"))


# ---- the declaration and the planner ------------------------------------------------------------
def test_needs_are_declared_per_hyperparameters_and_merge():
    lrw_hard = METHODS.get("lrw_hard")
    assert lrw_hard.reference_needs(lrw_hard.Hparams()) == ReferenceNeeds(pool_margins=True, oof_folds=(2,))
    assert lrw_hard.reference_needs(lrw_hard.Hparams(ranking="erm_on_train")).oof_folds == ()
    assert not METHODS.get("mwn").reference_needs(METHODS.get("mwn").Hparams())
    both = ReferenceNeeds(oof_folds=(3,)) | ReferenceNeeds(pool_margins=True, oof_folds=(2, 3))
    assert both == ReferenceNeeds(pool_margins=True, oof_folds=(2, 3)) and both.reference_trial
    with pytest.raises(ValueError, match="oof_folds"):
        ReferenceNeeds(oof_folds=(1,))


def test_a_sweep_without_a_train_twice_method_plans_no_out_of_fold_model(tmp_path):
    trials = plan(tmp_path, {"erm": {}, "lrw": {}, "mwn": {}, "lrw_hard": {"ranking": "erm_on_train"}})
    assert references.fold_jobs(trials) == []
    ordered, waits = references.order(trials, [])
    hard = [t for t in trials if t.labels["method"] == "lrw_hard"]
    assert all(waits[t.trial_id] == [t.erm_id] for t in hard)           # its ERM trial, nothing else
    assert all(waits[t.trial_id] == [] for t in trials if t.labels["method"] in ("erm", "lrw", "mwn"))


def test_a_sweep_with_train_twice_methods_plans_exactly_k_per_key_and_fold_count(tmp_path):
    trials = plan(tmp_path, {"lrw_hard": {}, "lrw_easy": {}, "erm_withheld_hard": {},
                             "lrw_random": {"crossfit_folds": 3}})
    jobs = references.fold_jobs(trials)
    keys = {t.erm_id for t in trials}
    assert len(keys) == 2 and len(jobs) == 2 * (2 + 3)                   # 2 seeds x (K=2 + K=3), shared by 3 methods
    assert {(j.folds, j.fold) for j in jobs if j.erm_id == min(keys)} == {(2, 0), (2, 1), (3, 0), (3, 1), (3, 2)}
    assert sum(t.reference_only and t.labels['method'] == 'erm' for t in trials) == 2   # the ERM trial of each key, added to the plan
    ordered, waits = references.order(trials, jobs)
    hard = next(t for t in trials if t.labels["method"] == "lrw_hard")
    assert sorted(waits[hard.trial_id]) == sorted([hard.erm_id, f"{hard.erm_id}-oof2-0", f"{hard.erm_id}-oof2-1"])
    first = [x.trial_id for x in ordered[:2 + len(jobs)]]                 # references before every method
    assert set(first) == keys | {j.trial_id for j in jobs}
    spec = jobs[0].spec(load_sweep(tmp_path / "s.yaml"))
    assert spec["job"] == "oof_fold" and spec["wandb"] is None
    assert spec["out_dir"].endswith(f"{jobs[0].erm_id}/oof-{jobs[0].folds}/fold-0")


def test_a_lost_out_of_fold_job_is_recorded_in_its_own_directory_and_its_done_dependants_wait(tmp_path):
    trials = plan(tmp_path, {"erm": {}, "lrw_hard": {}, "mwn": {}}, seeds=(0,))
    jobs = references.fold_jobs(trials)
    d = load_sweep(tmp_path / "s.yaml").directory
    assert references.run_dir(jobs[1].trial_id, jobs, d).path == oof_dir(d / "trials" / jobs[1].erm_id, 2, 1)
    assert references.run_dir(trials[0].trial_id, jobs, d).path == d / "trials" / trials[0].trial_id
    done = {t.trial_id: "done" for t in trials}
    waiting = references.done_but_rerun_reference(trials, done, [], jobs[1:])
    assert [t.labels["method"] for t in waiting] == ["lrw_hard"]          # not ERM, not MWN
    assert references.done_but_rerun_reference(trials, done, [], []) == []


# ---- out-of-fold models: once evaluated, checkpointed, the same in the store and in-process --------
def test_an_out_of_fold_model_is_evaluated_once_at_its_end(tmp_path, monkeypatch):
    calls = {"outputs": 0, "evaluate": 0}
    outputs, evaluate = Trainer.outputs, Trainer.evaluate

    def counted(name, fn):
        def wrapper(self, *a, **k):
            calls[name] += 1
            return fn(self, *a, **k)
        return wrapper
    monkeypatch.setattr(Trainer, "outputs", counted("outputs", outputs))
    monkeypatch.setattr(Trainer, "evaluate", counted("evaluate", evaluate))
    cfg = resolve(TrialConfig.model_validate({**BASE, "train": {"epochs": 3, "batch_size": 128, "eval_every": 1}}))
    result = run_fold(cfg, 2, 0, tmp_path / "fold")
    assert calls == {"outputs": 1, "evaluate": 0}
    run = RunDir(tmp_path / "fold")
    assert run.status == "done" and [r["epoch"] for r in run.metrics()] == [1, 2, 3]
    m = run.margins()
    assert result["fold"] == 0 and len(m["ids"]) == len(m["margins"]) > 0 and np.all(np.abs(m["margins"]) <= 1)


class Preempted(Exception):
    pass


def test_a_preempted_out_of_fold_model_resumes_from_its_checkpoint_bit_for_bit(tmp_path, monkeypatch):
    cfg = resolve(TrialConfig.model_validate({**BASE, "train": {"epochs": 3, "batch_size": 128}}))
    whole = run_fold(cfg, 2, 1, tmp_path / "whole")
    save = Checkpointer.save

    def save_then_die(self, trainer):
        save(self, trainer)
        if trainer.epoch == 2:
            raise Preempted
    monkeypatch.setattr(Checkpointer, "save", save_then_die)
    with pytest.raises(Preempted):
        run_fold(cfg, 2, 1, tmp_path / "cut", checkpoint=True)
    monkeypatch.setattr(Checkpointer, "save", save)
    epochs = []
    monkeypatch.setattr(Trainer, "train_epoch", lambda self, f=Trainer.train_epoch: epochs.append(1) or f(self))
    run_fold(cfg, 2, 1, tmp_path / "cut", checkpoint=True)
    assert len(epochs) == 1                                              # only the third epoch was trained again
    cut, ref = RunDir(tmp_path / "cut"), RunDir(tmp_path / "whole")
    assert [r["epoch"] for r in cut.metrics()] == [1, 2, 3]
    assert np.array_equal(cut.margins()["margins"], ref.margins()["margins"]) and whole["fold"] == 1


def test_store_and_in_process_out_of_fold_margins_agree_and_the_dependant_records_them(tmp_path):
    cfg = cfg_of("lrw_hard")
    erm_dir = tmp_path / trial_id(resolve(erm_reference_config(cfg)))
    store = StoreReference(tmp_path, cfg)
    assert store.oof_margins(2) is None and store.pool_margins() is None and store.used is None
    for k in range(2):
        run_fold(cfg, 2, k, oof_dir(erm_dir, 2, k))
    stored = store.oof_margins(2)
    assert set(store.used["files"]) == {"oof-2/fold-0/margins.npz", "oof-2/fold-1/margins.npz"}
    from benchmarks.trial.execute import prepare
    task, device, factory = prepare(cfg)
    pool = task.pool()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a trial's threads (trial_threads: 1 by default), as run_fold and run_trial use
    try:
        local = crossfit_margins(pool, task, cfg.train, RunContext(seed=0, model_factory=factory), 2,
                                 torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    by_id = dict(zip(stored.ids.tolist(), stored.margins.tolist()))
    assert np.array_equal(np.array([by_id[i] for i in pool.ids.tolist()], dtype=np.float32), local)
    # a dependant records the fold files it used; a changed fold makes it untrusted (rerun)
    run_trial(resolve(erm_reference_config(cfg)), erm_dir)
    run_trial(cfg, tmp_path / "hard", store_root=tmp_path)
    hard = RunDir(tmp_path / "hard")
    assert hard.status == "done" and hard.result()["method_info"]["erm_pass"] == "reused"
    fold = RunDir(oof_dir(erm_dir, 2, 1))
    m = fold.margins()
    fold.save_margins({"ids": m["ids"], "margins": m["margins"] + 0.01})   # completed again, other margins
    fold.finish({k: v for k, v in fold.result().items() if k != "files"})
    assert fold.status == "done" and "oof-2/fold-1/margins.npz" in (hard.problem() or "")


# ---- the service a method asks ----------------------------------------------------------------
class AsksUndeclared(Trainer):
    """Asks for out-of-fold margins it never declared."""

    def setup(self):
        self.reference.oof_margins(2)


def test_asking_for_an_undeclared_reference_output_is_an_error_naming_the_method():
    from tests.test_contract import tiny_task
    task = tiny_task()
    with pytest.raises(ConfigError, match="AsksUndeclared.*out-of-fold margins with 2 folds"):
        AsksUndeclared(torch.nn.Linear(36, 4), task, TrainConfig(epochs=1), None, RunContext(seed=0))


class WantsTestOutputs(Trainer):
    @classmethod
    def reference_needs(cls, hp):
        return ReferenceNeeds(test_outputs=True)


def test_test_outputs_from_the_store_match_the_reference_trained_in_process(tmp_path):
    cfg = cfg_of("erm")
    run_trial(cfg, tmp_path / trial_id(cfg))
    from benchmarks.trial.execute import prepare
    task, device, factory = prepare(cfg)
    t = WantsTestOutputs(factory(), task, cfg.train, None, RunContext(seed=0, model_factory=factory,
                                                                     reference=StoreReference(tmp_path, cfg)))
    stored = t.reference.test_outputs()
    local = InProcessReference(t).test_outputs()
    assert stored.source == "reused" and local.source == "in_process"
    assert np.array_equal(stored.ids, local.ids) and np.array_equal(stored.preds, local.preds)
    assert np.allclose(stored.margins, local.margins, atol=1e-5)


# ---- end to end: a sweep --------------------------------------------------------------------------
def test_sweeps_train_no_out_of_fold_model_unless_asked_then_exactly_k(tmp_path, env):  # noqa: F811
    path = sweep_file(tmp_path, methods={"erm": {}}, train={"epochs": 2, "batch_size": 256})
    r = sweep(path, env)
    assert r.returncode == 0, r.stderr
    trials = tmp_path / "results" / "s" / "trials"
    erm_id = next(e["trial_id"] for e in json.loads((trials.parent / "plan.json").read_text())
                  if e["labels"]["method"] == "erm")
    assert not list(trials.glob("*/oof-*"))                               # no cross-fit model trained
    assert not [k for k in RunDir(trials / erm_id).margins() if "oof" in k]
    erm_done = RunDir(trials / erm_id).file("done").read_bytes()
    path = sweep_file(tmp_path, methods={"erm": {}, "lrw_hard": {}, "lrw_easy": {}},
                      train={"epochs": 2, "batch_size": 256})
    r = sweep(path, env)
    assert r.returncode == 0, r.stderr
    folds = sorted(p.relative_to(trials).as_posix() for p in trials.glob("*/oof-*/fold-*"))
    assert folds == [f"{erm_id}/oof-2/fold-0", f"{erm_id}/oof-2/fold-1"]  # exactly K, shared by both methods
    assert all(len(RunDir(trials / f).metrics()) == 2 and RunDir(trials / f).status == "done" for f in folds)
    assert RunDir(trials / erm_id).file("done").read_bytes() == erm_done  # the done ERM trial was not rerun
    for e in json.loads((trials.parent / "plan.json").read_text()):
        if e["labels"]["method"].startswith("lrw_"):
            result = RunDir(trials / e["trial_id"]).result()
            assert result["method_info"]["erm_pass"] == "reused" and len(result["reference"]["files"]) == 3
