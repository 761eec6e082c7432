"""Registry contract: every registered method trains a few steps on a tiny task and evaluates sanely.

New methods are covered automatically: the parameter list is the registry itself.
"""
import math

import numpy as np
import pytest
import torch

from benchmarks import catalog
from benchmarks.config import MethodConfig, TrialConfig
from benchmarks.trial import run_trial
from molere.data import ExampleSet, TaskData
from molere.config import TrainConfig
from molere.registry import METHODS
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
    from molere.trainer import RunContext
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
