"""Reweighting diagnostics: fair mean-1 weights by default, and one verdict per method from what φ learned:
a φ that never moves is "untrained" whatever its initial spread, one that only rescales a constant is "moved
but constant", one that learns is "learned"; label-dependent ratios only where φ can see the label."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import benchmarks.catalog  # noqa: F401
from baselines.lrw import LRW
from benchmarks.data.load import DatasetConfig, load_task
from benchmarks.models import build_model
from benchmarks.data.regimes import RegimeConfig
from benchmarks.report import build_report
from benchmarks.trial.store import RunDir, write_json
from tests.fakes import finish_synthetic
from molere.config import TrainConfig
from molere.diagnostics import CONSTANT_REL_STD, relative_displacement, verdict, weight_diagnostics
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
        w = self.raw_weights(batch, out)
        return mean_one(w) if self.hp.normalize else w   # rescaled per batch, a constant cannot learn


def test_diagnostic_numbers_match_their_definitions():
    w = np.array([0.5, 1.0, 1.5, 1.2])
    d = weight_diagnostics(w, losses=np.array([3.0, 2.0, 1.0, 1.5]), noisy=np.array([1, 0, 0, 0], bool),
                           erm_margins=np.array([-0.5, 0.1, 0.9, 0.2]), initial=np.array([1.0, 2.0, 2.0, 1.0]))
    rel = w / w.mean()
    assert d["weight_rel_std"] == pytest.approx(rel.std()) and d["weight_ess"] == pytest.approx(
        w.sum() ** 2 / (len(w) * (w ** 2).sum()))
    assert (d["weight_min"], d["weight_max"]) == pytest.approx((0.5 / 1.05, 1.5 / 1.05))
    assert d["spearman_loss"] == pytest.approx(-1.0) and d["spearman_erm_margin"] == pytest.approx(1.0)
    assert d["noisy_over_clean_weight"] == pytest.approx(0.5 / (3.7 / 3))
    assert d["noisy_weight_mass"] == pytest.approx(0.5 / 4.2)
    w0 = np.array([1.0, 2.0, 2.0, 1.0]) / 1.5
    assert d["weight_change"] == pytest.approx(np.sqrt(np.mean((rel - w0) ** 2)))
    assert d["weight_scale_change"] == pytest.approx(1.05 / 1.5 - 1) and d["verdict"] == "learned"
    assert d["spearman_init_final"] == pytest.approx(stats.spearmanr(w0, w).statistic)
    assert relative_displacement([torch.tensor([3.0, 4.0])], [torch.tensor([0.0, 4.0])]) == pytest.approx(0.75)
    blind = weight_diagnostics(w, np.arange(4.0), noisy=np.array([1, 0, 0, 0], bool), label_dependent=False)
    assert "noisy_over_clean_weight" not in blind and not blind["label_dependent"]


def test_verdict_follows_what_phi_learned_not_its_spread():
    rng = np.random.default_rng(0)
    spread = np.exp(rng.normal(0, 0.5, 1000))                     # a random initial function, rel. std ~0.5
    never = weight_diagnostics(spread, np.arange(1000.0), initial=spread)
    assert never["weight_rel_std"] > 0.3 and never["verdict"] == "untrained"    # whatever its initial spread
    flat = weight_diagnostics(np.ones(1000), np.arange(1000.0), initial=spread)
    assert flat["verdict"] == "moved but constant"                # it learned to flatten: ERM's weights
    learned = weight_diagnostics(spread[::-1].copy(), np.arange(1000.0), initial=spread)
    assert learned["verdict"] == "learned" and learned["spearman_init_final"] < 0.5
    rescaled = weight_diagnostics(np.full(1000, 0.3), np.arange(1000.0), initial=np.full(1000, 0.5))
    assert rescaled["verdict"] == "moved but constant"            # a constant whose scale (step size) moved
    assert verdict(0.049, 0.95, 0.3) == "untrained" and verdict(0.051, 0.95, 0.3) == "learned"
    assert verdict(0.01, 0.5, 0.3) == "learned" and verdict(0.01, 0.95, 0.3, 0.2) == "learned"


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


class NeverMoves(LRW):
    """LRW whose φ starts with a wide spread of weights and never takes a step (its meta learning rate is 0)."""

    def setup(self):
        super().setup()
        with torch.no_grad():   # a wide but unsaturated spread of sigmoid outputs
            last = self.metanet.net[-1]
            last.weight.mul_(8.0)
            last.bias.zero_()

    def meta_optimizer(self):
        return torch.optim.SGD(self.meta_parameters(), lr=0.0)


def test_report_gives_one_verdict_from_what_phi_learned(noisy_digits, tmp_path):
    task, factory = noisy_digits
    constant = trainer(IgnoresInput, task, factory, epochs=2, meta_optimizer="adam", meta_lr=0.5, meta_every=1,
                       normalize=False)
    still = trainer(NeverMoves, task, factory, epochs=2)
    learning = trainer(LRW, task, factory, epochs=2, meta_optimizer="adam", meta_lr=0.05)
    constant.fit(), still.fit(), learning.fit()
    dc, ds, dl = (t.reweighting_diagnostics() for t in (constant, still, learning))
    assert dc["weight_rel_std"] < 1e-6 and dc["verdict"] == "moved but constant"
    assert abs(dc["weight_scale_change"]) > 0.05
    assert ds["initial_rel_std"] > CONSTANT_REL_STD and ds["verdict"] == "untrained"   # spread, but never moved
    assert ds["weight_change"] == 0 and ds["spearman_init_final"] == pytest.approx(1.0)
    assert dl["weight_rel_std"] > CONSTANT_REL_STD and dl["verdict"] == "learned" and dl["meta_displacement"] > 0
    assert "noisy_over_clean_weight" not in dl and not dl["label_dependent"]   # LRW's φ(x) cannot see labels
    json.dumps(dl)
    mwn = {**ds, "label_dependent": True, "noisy_over_clean_weight": 0.5, "noisy_weight_mass": 0.2}
    write_store(tmp_path, {("erm", 0): {"metrics": {"test/acc": 0.9}, "reweighting": None},
                           ("lrw", 0): {"metrics": {"test/acc": 0.9}, "reweighting": dl},
                           ("lrw_random", 0): {"metrics": {"test/acc": 0.9}, "reweighting": dc},
                           ("mwn", 0): {"metrics": {"test/acc": 0.9}, "reweighting": mwn},
                           ("mwn", 1): {"metrics": {"test/acc": 0.9},
                                        "reweighting": {**mwn, "noisy_over_clean_weight": 0.7}}})
    build_report(tmp_path)
    table = pd.read_csv(tmp_path / "report" / "tables" / "reweighting.csv").set_index("method")
    assert table.loc["lrw", "verdict"] == "learned (1/1 seeds)"
    assert table.loc["lrw_random", "verdict"] == "moved but constant (1/1 seeds)"
    assert table.loc["mwn", "verdict"] == "untrained (2/2 seeds)"
    assert table.loc["lrw", "mislabelled / clean weight [95% CI]"] == "n/a (φ cannot see the label)"
    assert table.loc["mwn", "mislabelled / clean weight [95% CI]"].startswith("0.60 [-0.67, 1.87]")
    assert "erm" not in table.index
    assert "Does the reweighting do anything?" in (tmp_path / "report" / "report.md").read_text()
