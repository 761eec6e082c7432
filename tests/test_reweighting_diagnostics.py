"""Reweighting diagnostics: fair mean-1 weights by default, and a weight network that ignores its input is
flagged as effectively constant by the report (one that learns is not)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import benchmarks.catalog  # noqa: F401
from baselines.lrw import LRW
from benchmarks.data.load import DatasetConfig, load_task
from benchmarks.models import build_model
from benchmarks.data.regimes import RegimeConfig
from benchmarks.report import build_report
from benchmarks.trial.store import RunDir, write_json
from tests.fakes import finish_synthetic
from molere.config import TrainConfig
from molere.diagnostics import CONSTANT_REL_STD, relative_displacement, weight_diagnostics
from molere.registry import METHODS
from molere.reweighting import mean_one
from molere.trainer import RunContext

WEIGHT_NET_METHODS = ("lrw", "lrw_random", "lrw_easy", "lrw_hard", "molere", "mwn")


@pytest.fixture(scope="module")
def noisy_digits():
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(kind="symmetric", rate=0.4), 0)
    factory = lambda: build_model("mlp", task.num_classes, task.input_shape, {"hidden": [64]})   # noqa: E731
    return task, factory


def trainer(cls, task, factory, epochs=1, **hp):
    torch.manual_seed(0)
    return cls(factory(), task, TrainConfig(epochs=epochs, batch_size=128, lr=0.1), cls.Hparams(**hp),
               RunContext(seed=0, model_factory=factory))


@pytest.mark.parametrize("name", WEIGHT_NET_METHODS)
def test_default_weights_have_mean_one_over_an_epoch(noisy_digits, name):
    t = trainer(METHODS.get(name), *noisy_digits)
    metrics = t.train_epoch()
    assert metrics["train/weight_mean"] == pytest.approx(1.0, abs=1e-6)
    literal = trainer(METHODS.get(name), *noisy_digits, normalize=False).train_epoch()
    assert abs(literal["train/weight_mean"] - 1.0) > 0.1          # Eq. 13 as written: sigmoid weights ≈ 0.5


class IgnoresInput(LRW):
    """LRW whose weight network outputs one learnable constant, whatever the example."""

    def raw_weights(self, batch, out):
        return torch.sigmoid(self.metanet.net[-1].bias).expand(len(batch.y))

    def example_weights(self, batch, out):
        return mean_one(self.raw_weights(batch, out))


def test_diagnostic_numbers_match_their_definitions():
    w = np.array([0.5, 1.0, 1.5, 1.2])
    d = weight_diagnostics(w, losses=np.array([3.0, 2.0, 1.0, 1.5]), noisy=np.array([1, 0, 0, 0], bool),
                           erm_margins=np.array([-0.5, 0.1, 0.9, 0.2]))
    rel = w / w.mean()
    assert d["weight_rel_std"] == pytest.approx(rel.std()) and d["weight_ess"] == pytest.approx(
        w.sum() ** 2 / (len(w) * (w ** 2).sum()))
    assert (d["weight_min"], d["weight_max"]) == pytest.approx((0.5 / 1.05, 1.5 / 1.05))
    assert d["spearman_loss"] == pytest.approx(-1.0) and d["spearman_erm_margin"] == pytest.approx(1.0)
    assert d["noisy_over_clean_weight"] == pytest.approx(0.5 / (3.7 / 3))
    assert d["noisy_weight_mass"] == pytest.approx(0.5 / 4.2)
    assert not d["constant"] and weight_diagnostics(np.full(5, 0.3), np.arange(5.0))["constant"]
    assert relative_displacement([torch.tensor([3.0, 4.0])], [torch.tensor([0.0, 4.0])]) == pytest.approx(0.75)


def write_store(root, cells):
    """A sweep store of done trials: {(method, seed): result dict}."""
    plan = []
    for (method, seed), result in cells.items():
        tid = f"{method}-{seed}"
        cfg = {"dataset": {"name": "digits"}, "regime": {"kind": "clean"}, "model": {"name": "mlp"},
               "method": {"name": method, "hparams": {}}, "train": {"epochs": 1}, "seed": seed}
        plan.append({"trial_id": tid, "labels": {"dataset": "digits", "regime": "clean", "method": method,
                                                 "seed": seed, "hparams_id": "h0"}, "config": cfg})
        run = RunDir(root / "trials" / tid)
        run.start({"trial_id": tid, "config": cfg})
        finish_synthetic(run, {"trial_id": tid, "status": "done", **result})
    write_json(root / "plan.json", plan)


def test_report_flags_a_weight_net_that_ignores_its_input(noisy_digits, tmp_path):
    task, factory = noisy_digits
    constant = trainer(IgnoresInput, task, factory, epochs=2)
    learning = trainer(LRW, task, factory, epochs=2, meta_optimizer="adam", meta_lr=0.05)
    constant.fit(), learning.fit()
    dc, dl = constant.reweighting_diagnostics(), learning.reweighting_diagnostics()
    assert dc["weight_rel_std"] < 1e-6 and dc["constant"]
    assert dl["weight_rel_std"] > CONSTANT_REL_STD and not dl["constant"] and dl["meta_displacement"] > 0
    assert dl["noisy_fraction"] == pytest.approx((constant.train_set.labels != constant.train_set.true_labels)
                                                 .float().mean().item())
    json.dumps(dl)
    write_store(tmp_path, {("erm", 0): {"metrics": {"test/acc": 0.9}, "reweighting": None},
                           ("lrw", 0): {"metrics": {"test/acc": 0.9}, "reweighting": dl},
                           ("mwn", 0): {"metrics": {"test/acc": 0.9}, "reweighting": dc}})   # mwn's slot: the constant net
    build_report(tmp_path)
    table = pd.read_csv(tmp_path / "report" / "tables" / "reweighting.csv").set_index("method")
    assert table.loc["mwn", "effectively constant"] == "yes (1/1 seeds)"
    assert table.loc["lrw", "effectively constant"] == "no (0/1 seeds)"
    assert table.loc["lrw", "φ untrained"] == "no (0/1 seeds)" and dl["meta_displacement"] > 1e-3
    assert "erm" not in table.index
    assert "Does the reweighting do anything?" in (tmp_path / "report" / "report.md").read_text()
