"""The divergence guard (molere.guard): its criteria, that it stops and records a diverged trial, that the
store counts it apart, and that it changes nothing in a healthy run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.trial.config import TrialConfig, identity, trial_id
from benchmarks.trial.execute import run_trial
from benchmarks.trial.store import FINISHED, RunDir
from molere.config import GuardConfig, TrainConfig
from molere.data import ExampleSet
from molere.guard import DivergenceGuard
from molere.registry import METHODS, register_method
from molere.trainer import Trainer

C = 4


class Ascent(Trainer):
    """Gradient ascent on the cross-entropy from epoch `start` on: a model that really falls apart."""
    start = 1

    def training_step(self, batch):
        loss = super().training_step(batch)
        return -loss if self.epoch >= self.start else loss


if "test_ascent" not in METHODS:
    register_method("test_ascent")(Ascent)


class FakeTrainer:
    """What the guard reads of a trainer: logits of its guard examples (predictions = `predict(labels)`)."""

    def __init__(self):
        self.predict = lambda y: y

    def logits(self, examples):
        return torch.nn.functional.one_hot(self.predict(examples.labels), C).float()


def guard(labels=None, **cfg) -> tuple[DivergenceGuard, FakeTrainer]:
    labels = torch.arange(200) % C if labels is None else labels
    return DivergenceGuard(GuardConfig(**cfg), ExampleSet(labels, x=torch.zeros(len(labels), 1)), C, seed=0), \
        FakeTrainer()


def test_loss_criterion_needs_patience_consecutive_epochs():
    g, t = guard(examples=0)
    for epoch, loss in enumerate([2.0, 4.5, 1.0, 4.1], 1):   # single spikes: not diverged
        g.after_epoch(t, epoch, loss)
    assert g.divergence is None and not g.stopped
    g.after_epoch(t, 5, 4.2)
    assert g.divergence.epoch == 5 and g.divergence.criterion == "loss" and g.stopped
    assert "2.10x its first epoch's (2.000)" in g.divergence.reason


def test_collapse_criterion():
    g, t = guard(patience=1)
    assert g.after_epoch(t, 1, 2.0)["guard/train_acc_observed"] == 1.0 and g.divergence is None
    t.predict = lambda y: torch.full_like(y, 2)   # one class (a quarter of the labels) takes every prediction
    assert g.after_epoch(t, 2, 1.0)["guard/top_class_share"] == 1.0
    assert g.divergence.criterion == "collapse" and g.divergence.epoch == 2


def test_a_model_that_has_not_learned_yet_has_not_collapsed():
    """A long tail's first epochs: every prediction is the head class (40% of the labels) before any epoch was
    above chance; then the model learns. Not diverged (before: stopped at epoch 2 as 'collapse')."""
    labels = torch.tensor([0] * 80 + [1] * 60 + [2] * 40 + [3] * 20)
    g, t = guard(labels=labels)
    t.predict = torch.zeros_like
    for epoch in (1, 2, 3):
        g.after_epoch(t, epoch, 2.0 - 0.1 * epoch)
    assert g.divergence is None
    t.predict = lambda y: y
    g.after_epoch(t, 4, 1.0)
    t.predict = torch.zeros_like   # after learning, the same collapse counts
    g.after_epoch(t, 5, 1.0)
    g.after_epoch(t, 6, 1.0)
    assert g.divergence is not None and g.divergence.criterion == "collapse" and g.divergence.epoch == 6


def test_chance_criterion_needs_an_earlier_peak():
    g, t = guard(patience=1)
    g.after_epoch(t, 1, 2.0)
    t.predict = lambda y: (y + 1) % C   # wrong everywhere, no class dominating: at chance after a peak
    metrics = g.after_epoch(t, 2, 1.0)
    assert metrics["guard/top_class_share"] == 0.25 and g.divergence.criterion == "chance"
    g2, t2 = guard(patience=1)
    t2.predict = lambda y: (y + 1) % C   # at chance from the start: never fell to it
    g2.after_epoch(t2, 1, 2.0)
    g2.after_epoch(t2, 2, 1.9)
    assert g2.divergence is None


def test_predicting_a_majority_class_is_no_collapse_where_the_labels_are_that_skewed():
    labels = torch.zeros(200, dtype=torch.long)
    labels[:10] = torch.arange(10) % C
    g, t = guard(labels=labels, patience=1)
    t.predict = torch.zeros_like
    g.after_epoch(t, 1, 2.0)
    g.after_epoch(t, 2, 1.5)
    assert g.divergence is None


def test_disabled_guard_watches_nothing_and_state_round_trips():
    g, t = guard(enabled=False)
    assert g.examples is None and g.after_epoch(t, 1, 2.0) == {} and g.after_epoch(t, 2, 9.0) == {}
    assert g.divergence is None
    g1, t1 = guard(patience=1)
    g1.after_epoch(t1, 1, 2.0)
    g1.after_epoch(t1, 2, 5.0)
    g2, _ = guard(patience=1)
    g2.load_state_dict(json.loads(json.dumps(g1.state_dict())))
    assert g2.divergence == g1.divergence and g2.first_loss == 2.0 and g2.streaks == g1.streaks


def digits(method="erm", epochs=6, guard_cfg=None, **train):
    cfg = {"epochs": epochs, "batch_size": 128, "eval_every": 2, **train}
    if guard_cfg is not None:
        cfg["guard"] = guard_cfg
    return TrialConfig(dataset={"name": "digits"}, model={"name": "mlp", "options": {"hidden": [32]}},
                       method={"name": method}, train=cfg, seed=0)


def test_a_diverging_trial_is_stopped_and_sealed_as_diverged(tmp_path):
    result = run_trial(digits("test_ascent"), tmp_path / "a")
    run = RunDir(tmp_path / "a")
    assert result["status"] == "diverged" and run.status == "diverged" and run.status in FINISHED
    assert run.result()["diverged_criterion"] in ("loss", "collapse", "chance")
    epoch = result["diverged_epoch"]
    assert 3 <= epoch < 6 and [r["epoch"] for r in run.metrics()] == list(range(1, epoch + 1))
    assert run.problem() is None and "test/acc" in result["metrics"]   # evaluated where it stopped
    assert run.metrics()[0]["guard/loss_ratio"] == 1.0
    # stop: false trains every epoch and still records the first diverged epoch
    on = run_trial(digits("test_ascent", guard_cfg={"stop": False}), tmp_path / "b")
    assert on["status"] == "diverged" and on["diverged_epoch"] == epoch
    assert len(RunDir(tmp_path / "b").metrics()) == 6


def test_the_guard_changes_nothing_in_a_healthy_run(tmp_path):
    guarded = run_trial(digits(), tmp_path / "g")
    plain = run_trial(digits(guard_cfg={"enabled": False}), tmp_path / "p")
    assert guarded["status"] == plain["status"] == "done"
    for row_g, row_p in zip(RunDir(tmp_path / "g").metrics(), RunDir(tmp_path / "p").metrics()):
        assert {k: v for k, v in row_g.items() if not k.startswith(("guard/", "train/epoch_time"))} == \
            {k: v for k, v in row_p.items() if not k.startswith("train/epoch_time")}
    a, b = RunDir(tmp_path / "g").margins(), RunDir(tmp_path / "p").margins()
    assert np.array_equal(a["test_margins"], b["test_margins"])
    assert max(r["guard/loss_ratio"] for r in RunDir(tmp_path / "g").metrics()[1:]) < 1


def test_default_guard_keeps_trial_ids_and_a_changed_one_is_part_of_the_identity():
    default, changed = digits(), digits(guard_cfg={"loss_ratio": 3.0})
    assert "guard" not in identity(default)["train"] and identity(changed)["train"]["guard"]["loss_ratio"] == 3.0
    assert trial_id(default) != trial_id(changed)
    assert TrainConfig().guard == GuardConfig()
