"""Registry contract: every registered method trains a few steps on a tiny task and evaluates sanely, and
every meta method's meta step runs in its first epoch.

New methods are covered automatically: the parameter list is the registry itself. A plugin's methods are
covered with `pytest tests/test_contract.py --plugin my_methods` (see README, "Adding a method").
"""
import math

import numpy as np
import pytest
import torch

from benchmarks import catalog
from benchmarks.trial.config import MethodConfig, TrialConfig
from benchmarks.trial.execute import run_trial
from molere.data import ExampleSet, TaskData
from molere.config import TrainConfig
from molere.registry import METHODS
from molere.reweighting import MetaTrainer, ReweightingTrainer
from molere.trainer import RunContext
from benchmarks.models import build_model


def tiny_task(n=240, classes=4, seed=0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, 1, 6, 6, generator=g) * 2

    def make(m, offset):
        y = torch.arange(m) % classes
        x = centers[y] + torch.randn(m, 1, 6, 6, generator=g)
        return ExampleSet(y, x=x, ids=torch.arange(m) + offset)

    return TaskData("tiny", train=make(n, 0), val=make(n // 4, n), test=make(n // 4, 2 * n),
                    num_classes=classes, input_shape=(1, 6, 6))


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains_and_evaluates(name):
    task = tiny_task()
    torch.manual_seed(0)
    factory = lambda: build_model("cnn", task.num_classes, task.input_shape, {"channels": [8, 8]})  # noqa: E731
    method = METHODS.get(name)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05)
    trainer = method(factory(), task, cfg, method.Hparams(), RunContext(seed=0, model_factory=factory))
    final = trainer.fit()
    assert final["epoch"] == 2 and math.isfinite(final["train/loss"])
    metrics, outs = trainer.evaluate()
    assert 0.0 <= metrics["test/acc"] <= 1.0
    o = outs["test"]
    assert o.margins.shape == o.preds.shape == o.ids.shape == (len(task.test),)
    assert np.all(np.isfinite(o.margins)) and np.all(np.abs(o.margins) <= 1.0)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert len(trainer.train_set) > 0
    if method.uses_meta_set:
        assert trainer.meta_set is not None and len(trainer.meta_set) > 0
    # a method that trains on official val examples declares it, and then reports no (non-held-out) val/*
    trains_on_val = bool(set(task.val.ids.tolist()) & set(trainer.train_set.ids.tolist()))
    assert method.trains_on_val == trains_on_val
    assert ("val/acc" in metrics) == (not trains_on_val)


def test_registry_lists_every_method_with_doc_and_defaults():
    rows = {name: (doc, defaults) for name, doc, defaults in catalog.METHODS.describe()}
    assert {"erm", "mwn", "l2rw", "fsr", "lrw", "lrw_hard", "lrw_easy", "lrw_random", "molere"} <= set(rows)
    for name, (doc, defaults) in rows.items():
        assert doc, f"{name} has no one-line docstring"
        assert isinstance(defaults, dict)


META = [n for n in METHODS.names() if issubclass(METHODS.get(n), MetaTrainer)]


@pytest.mark.parametrize("name", META)
def test_every_meta_method_runs_its_meta_step_in_the_first_epoch(name):
    """A meta method must not train silently as ERM: by the end of epoch 1 its look-ahead has run, the meta
    validation loss is logged and (with a weighting function φ) φ has moved. An option `meta_warmup_epochs`
    delays the meta step on purpose and is set to 0 here."""
    task = tiny_task()
    torch.manual_seed(0)
    factory = lambda: build_model("cnn", task.num_classes, task.input_shape, {"channels": [8, 8]})  # noqa: E731
    method = METHODS.get(name)
    hp = method.Hparams(**({"meta_warmup_epochs": 0} if "meta_warmup_epochs" in method.Hparams.model_fields else {}))
    trainer = method(factory(), task, TrainConfig(epochs=1, batch_size=32, lr=0.05), hp,
                     RunContext(seed=0, model_factory=factory))
    before = [p.detach().clone() for p in trainer.meta_parameters()] if isinstance(trainer, ReweightingTrainer) else []
    metrics = trainer.fit()
    assert trainer.lookahead.calls > 0, f"{name}: no look-ahead in the first epoch"
    assert math.isfinite(metrics.get("train/meta_val_loss", float("nan"))), f"{name}: no meta_val_loss logged"
    if before:
        moved = any(not torch.equal(a, p.detach()) for a, p in zip(before, trainer.meta_parameters()))
        assert moved, f"{name}: its weighting function did not change in the first epoch"
