"""colored_digits (Colored MNIST's construction on sklearn digits): sizes, colour-label agreement per split,
groups, determinism, ERM's use of the spurious colour; and the fidelity table's worst-group measure."""
from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

from benchmarks.data.load import DatasetConfig, load_task
from benchmarks.data.regimes import RegimeConfig
from benchmarks.report import fidelity as FI
from benchmarks.trial.config import TrialConfig
from benchmarks.trial.execute import run_trial
from tests.test_datasets_paper import loader


def agreement(part) -> float:
    """Share of examples whose colour (groups = 2 * label + colour) equals their label."""
    return float(((part.groups % 2) == part.labels).float().mean())


@pytest.fixture(scope="module")
def task():
    return loader("colored_digits").load(None, 0)


def test_split_sizes_shapes_and_groups(task):
    sizes = {k: len(v) for k, v in task.eval_splits().items()}
    assert len(task.train) == 1132 and sizes == {"test": 539, "val": 126, "id": 539}   # 1797 digits, 30% test
    assert task.input_shape == (2, 8, 8) and tuple(task.train.x.shape[1:]) == (2, 8, 8) and task.num_classes == 2
    for part in (task.train, task.val, task.test, task.extra_tests["id"]):
        assert sorted(torch.unique(part.groups).tolist()) == [0, 1, 2, 3]   # every (label, colour) present
        colour = part.groups % 2
        on = part.x.flatten(2).abs().sum(2) > 0                              # channels holding the image
        assert torch.equal(on[torch.arange(len(part)), 1 - colour], torch.zeros(len(part), dtype=torch.bool))
        assert torch.equal(part.labels, part.true_labels)                    # the noise is the data's own
    ids = torch.cat([task.train.ids, task.val.ids, task.test.ids, task.extra_tests["id"].ids])
    assert len(torch.unique(ids)) == len(ids)
    assert abs(task.info["label_noise"] - 0.25) < 0.03


def test_colour_agrees_with_the_label_in_train_and_is_reversed_in_test(task):
    assert abs(agreement(task.train) - 0.9) < 0.04 and abs(agreement(task.val) - 0.9) < 0.06
    assert abs(agreement(task.test) - 0.1) < 0.05 and abs(agreement(task.extra_tests["id"]) - 0.9) < 0.05
    other = loader("colored_digits", train_agreement=0.5, test_agreement=1.0, label_noise=0.0).load(None, 0)
    assert abs(agreement(other.train) - 0.5) < 0.05 and agreement(other.test) == 1.0
    digits = load_digits().target
    assert (other.test.labels.numpy() == (digits[other.test.ids.numpy()] < 5)).all()   # no noise: digit < 5
    noisy = (task.test.labels.numpy() != (digits[task.test.ids.numpy()] < 5)).mean()
    assert 0.18 < noisy < 0.32                                                        # 25% flipped in test too
    assert "id" not in loader("colored_digits", id_test=False).load(None, 0).extra_tests


def test_deterministic_given_the_split_seed_and_not_the_trial_seed(task):
    again = loader("colored_digits").load(None, 7)
    for a, b in ((task.train, again.train), (task.test, again.test), (task.val, again.val)):
        assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels) and torch.equal(a.groups, b.groups)
    other = loader("colored_digits", split_seed=1).load(None, 0)
    assert not torch.equal(other.test.groups, task.test.groups)
    full = load_task(DatasetConfig(name="colored_digits"), RegimeConfig(), seed=0)   # the harness's splits
    assert (len(full.train), len(full.val), len(full.selection)) == (1019, 113, 126)
    assert full.selection.groups is not None and full.train.groups is not None


def test_erm_uses_the_spurious_colour():
    cfg = TrialConfig(dataset={"name": "colored_digits"}, regime={"kind": "clean"},
                      model={"name": "mlp", "options": {"hidden": [128]}}, method={"name": "erm"},
                      train={"epochs": 5, "batch_size": 128, "lr": 0.1, "eval_every": 5}, seed=0)
    with tempfile.TemporaryDirectory() as d:
        m = run_trial(cfg, d)["metrics"]
    assert m["train/acc_observed"] > 0.8 and m["id/acc"] > 0.8              # in distribution: colour works
    assert m["test/acc"] < m["train/acc_observed"] - 0.4                     # reversed colours: it fails
    assert m["test/worst_group_acc"] < 0.2


def test_worst_group_gain_pairs_each_trial_with_its_erm_seed():
    df = pd.DataFrame({"trial_id": ["e0", "e1", "j0", "j1"], "method": ["erm", "erm", "jtt", "jtt"],
                       "erm_trial": [None, None, "e0", "e1"], "test/worst_group_acc": [0.1, 0.2, 0.5, 0.3]})
    fn = FI.MEASURES["worst_group_gain"][0]
    assert np.allclose(fn(df[df["method"] == "jtt"], df, {}), [40.0, 10.0])
    assert np.isnan(fn(df[df["method"] == "jtt"], df.drop(columns="test/worst_group_acc"), {})).all()
