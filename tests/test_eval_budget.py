"""Evaluation on a budget: `eval_every: auto` scales with the evaluation splits' size against training,
the selection split can be evaluated at the last epoch only, helper ERM runs evaluate once, and MOLERE makes
only the pool passes a re-split reads, with the same training as before."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import catalog  # noqa: F401  (registers everything)
from benchmarks.data.load import DatasetConfig, load_task
from benchmarks.data.regimes import RegimeConfig
from benchmarks.models import build_model
from benchmarks.trial.config import TrialConfig
from benchmarks.trial.execute import run_trial
from molere.config import TrainConfig
from molere.data import ExampleSet, TaskData
from molere.evaluation import auto_eval_every, eval_epochs
from molere.registry import METHODS
from molere.trainer import Callback, RunContext, Trainer


def test_auto_interval_scales_with_the_evaluation_splits():
    assert auto_eval_every(1000, 300, 30) == 2                      # 300 / 3 / (0.05 · 1000) = 2
    assert auto_eval_every(1000, 100, 30) == 1                      # small evaluation splits: every epoch
    assert auto_eval_every(1000, 30_000, 30) == 30                  # huge ones: only at the end
    imagenet = auto_eval_every(1_130_000, 50_000 + 125_000, 10)     # test + selection vs train
    camelyon = auto_eval_every(272_000, 35_000 + 85_000 + 34_000 + 30_000, 5)
    assert imagenet == 2 and camelyon == 5
    assert eval_epochs("auto", 1_130_000, 175_000, 10) == [2, 4, 6, 8, 10]
    assert eval_epochs(3, 1, 1, 10) == [3, 6, 9, 10] and eval_epochs(1, 1, 1, 2) == [1, 2]


class Epochs(Callback):
    def __init__(self):
        self.rows = []

    def on_epoch_end(self, trainer, epoch, metrics):
        self.rows.append((epoch, sorted(k for k in metrics if k.endswith("/acc"))))


def small_task(n_train: int, n_eval: int) -> TaskData:
    g = torch.Generator().manual_seed(0)

    def make(n, offset):
        return ExampleSet(torch.arange(n) % 3, x=torch.randn(n, 4, generator=g), ids=torch.arange(n) + offset)
    return TaskData("t", train=make(n_train, 0), test=make(n_eval, n_train), num_classes=3, input_shape=(4,),
                    selection=make(n_eval // 2, 10 * n_train))


@pytest.mark.parametrize("n_eval,expected", [(30, [1, 2, 3, 4]), (80, [2, 4]), (3000, [4])])
def test_auto_evaluates_as_often_as_the_budget_allows(n_eval, expected):
    rec = Epochs()
    t = Trainer(torch.nn.Linear(4, 3), small_task(400, n_eval), TrainConfig(epochs=4, batch_size=100,
                eval_every="auto"), context=RunContext(callbacks=[rec]))
    t.fit()
    assert [e for e, accs in rec.rows if accs] == expected


def test_selection_split_at_the_last_epoch_only():
    for when, expected in (("every", [True, True, True]), ("last", [False, False, True])):
        rec = Epochs()
        t = Trainer(torch.nn.Linear(4, 3), small_task(300, 60), TrainConfig(epochs=3, batch_size=100,
                    eval_selection=when), context=RunContext(callbacks=[rec]))
        t.fit()
        assert [("selection/acc" in accs) for _, accs in rec.rows] == expected, when
        assert all("test/acc" in accs for _, accs in rec.rows)       # the other splits keep their cadence


def test_the_out_of_fold_erms_evaluate_their_held_out_fold_once(tmp_path, monkeypatch):
    passes = []
    real = ExampleSet.batches

    def counting(self, *args, train=True, **kw):
        if not train:
            passes.append(len(self))
        return real(self, *args, train=train, **kw)

    monkeypatch.setattr(ExampleSet, "batches", counting)
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(), 0)
    cfg = TrialConfig.model_validate({"dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {
        "hidden": [8]}}, "method": {"name": "erm"}, "train": {"epochs": 3, "batch_size": 256, "num_workers": 0}})
    run_trial(cfg, tmp_path / "run")
    assert passes.count(len(task.test)) == 3                       # the trial itself still evaluates every epoch
    from benchmarks.trial.reference import run_fold
    from molere.reference_runs import fold_of
    pool = task.pool()
    fold = fold_of(pool.ids.numpy(), pool.labels.numpy(), 2, 0)
    passes.clear()
    for k in range(2):                                             # the fold jobs a sweep plans for the key
        run_fold(cfg, 2, k, tmp_path / f"fold{k}")
    for k in range(2):
        assert passes.count(int((fold == k).sum())) == 1, passes
    assert len(task.test) not in passes                            # no per-epoch evaluation of a fold model


def molere(epochs: int, warmup: int):
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(kind="symmetric", rate=0.3), 0)
    torch.manual_seed(0)
    model = build_model("mlp", task.num_classes, task.input_shape, {"hidden": [16]})
    cls = METHODS.get("molere")
    return cls(model, task, TrainConfig(epochs=epochs, batch_size=128, lr=0.05, num_workers=0),
               cls.Hparams(meta_warmup_epochs=warmup), RunContext(seed=0))


def run_counting(t):
    passes = []
    real = t.pool_pass
    t.pool_pass = lambda examples=None: passes.append(t.epoch) or real(examples)
    t.fit()
    return passes


def test_molere_makes_only_the_pool_passes_a_split_reads_and_trains_the_same():
    lean = molere(epochs=5, warmup=2)
    passes = run_counting(lean)
    # before epoch 1 (the random split's statistics), then after epochs 2, 3, 4 (re-splits of epochs 3, 4, 5);
    # none after epoch 1 (still warm-up next) nor after epoch 5 (the last)
    assert passes == [0, 1, 2, 3]
    full = molere(epochs=5, warmup=2)
    full.resplits_after = lambda epoch: True                        # the previous behaviour: a pass every epoch
    assert len(run_counting(full)) == 6
    for a, b in zip(lean.model.parameters(), full.model.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(lean.val_mask, full.val_mask)
    assert [h["split/val_margin"] for h in lean.info["split_history"]] == \
        [h["split/val_margin"] for h in full.info["split_history"]]
    assert np.isfinite(lean.info["split_history"][-1]["split/overlap_prev"])
