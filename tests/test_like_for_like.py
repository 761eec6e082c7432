"""Like-for-like by construction: the same data (val follows the training distribution; the same-data
reference planned), the same steps (`train.budget`), the same tuning (common quasi-random draws, draw 0 =
the base configuration), declared data (every shipped sweep states its selection split)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import benchmarks.catalog  # noqa: F401  (registers everything)
from benchmarks.data.load import DatasetConfig, load_task
from benchmarks.data.regimes import RegimeConfig
from benchmarks.models import build_model
from benchmarks.sweep.plan import expand_trials
from benchmarks.sweep.schema import load_sweep
from molere.config import ConfigError, TrainConfig
from molere.registry import METHODS
from molere.trainer import RunContext, Trainer
from tests.test_sweep_schema import with_, write

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def fit(name: str, task, epochs: int = 2, budget: str = "steps", **hp):
    factory = lambda: build_model("mlp", task.num_classes, task.input_shape, {"hidden": [16]})  # noqa: E731
    torch.manual_seed(0)
    cls = METHODS.get(name)
    t = cls(factory(), task, TrainConfig(epochs=epochs, batch_size=64, lr=0.1, budget=budget), cls.Hparams(**hp),
            RunContext(seed=0, model_factory=factory))
    t.fit()
    return t


@pytest.fixture(scope="module")
def longtail_digits():
    return load_task(DatasetConfig(name="digits"), RegimeConfig(kind="longtail", imbalance=100), 0)


# ---- same data --------------------------------------------------------------------------------------------
def test_digits_longtail_train_twice_sees_the_histogram_of_its_references(longtail_digits):
    """The variant's pool is ERM's training split plus val (erm_train_val's training data, class for class) and
    val follows the long tail, so its training set has ERM's histogram up to the δ split (the rarest classes are
    not topped up by a balanced val: before, 15 -> 71 examples of the 5 rarest)."""
    task = longtail_digits
    erm, pooled = fit("erm", task, epochs=1), fit("erm_train_val", task, epochs=1)
    variant = fit("erm_withheld_random", task, epochs=1)
    lrw = fit("lrw_random", task, epochs=1)
    hist = lambda e: e.class_counts(10)   # noqa: E731
    assert torch.equal(hist(variant.train_set) + hist(variant.withheld), hist(pooled.train_set))
    assert torch.equal(hist(lrw.train_set) + hist(lrw.meta_set), hist(erm.train_set) + hist(task.val))
    delta = hist(variant.withheld)
    assert ((hist(variant.train_set) - hist(erm.train_set)).abs() <= delta + hist(task.val)).all()
    rarest = torch.argsort(hist(erm.train_set))[:5]
    assert abs(int(hist(variant.train_set)[rarest].sum()) - int(hist(erm.train_set)[rarest].sum())) <= 3
    assert abs(len(variant.train_set) - len(erm.train_set)) <= 2
    for t, seen in ((erm, len(task.train)), (pooled, len(task.train) + len(task.val)),
                    (lrw, len(task.train) + len(task.val)), (variant, len(variant.train_set))):
        assert t.info["counts"]["seen"] == seen                              # what the report compares


def test_a_sweep_learning_from_an_ood_val_split_gets_erm_train_val_planned(tmp_path):
    d = with_(datasets=[{"name": "camelyon17", "root": str(tmp_path / "wilds"), "options": {"val_split": "val"}}],
              model={"name": "mlp"}, methods={"erm": {}, "molere": {}}, seeds=[0, 1])
    trials = expand_trials(load_sweep(write(tmp_path, d)))
    added = [t for t in trials if t.labels["method"] == "erm_train_val"]
    assert len(added) == 2 and all(t.reference_only for t in added)
    molere = [t for t in trials if t.labels["method"] == "molere"]
    assert {t.same_data_id for t in molere} == {t.trial_id for t in added}
    assert all(t.record()["same_data_trial_id"] for t in molere)
    only_erm = expand_trials(load_sweep(write(tmp_path, with_(methods={"erm": {}}))))
    assert {t.labels["method"] for t in only_erm} == {"erm"}                 # nothing learns from val: none added
    per_class = with_(methods={"erm": {}, "mwn": {"meta_source": "train_per_class"}})
    assert "erm_train_val" not in {t.labels["method"] for t in expand_trials(load_sweep(write(tmp_path, per_class)))}


# ---- same steps -------------------------------------------------------------------------------------------
def test_budget_steps_gives_every_method_the_references_steps(longtail_digits):
    task = longtail_digits
    erm_steps = 2 * math.ceil(len(task.train) / 64)
    for name in ("erm", "erm_train_val", "lrw_random", "molere"):
        assert fit(name, task).info["counts"]["steps"] == erm_steps, name
    pooled = fit("erm_train_val", task, budget="epochs")
    assert pooled.info["counts"]["steps"] == 2 * math.ceil((len(task.train) + len(task.val)) / 64) > erm_steps
    assert pooled.info["counts"]["budget"] == "epochs"


class Plugin(Trainer):
    """A method that knows nothing about counts (the base Trainer records them)."""

    def split(self):
        return self.data.train.subset(torch.arange(0, len(self.data.train), 2)), None


def test_the_base_trainer_records_realised_counts_for_every_method(longtail_digits):
    task = longtail_digits
    factory = lambda: build_model("mlp", 10, task.input_shape, {"hidden": [8]})  # noqa: E731
    t = Plugin(factory(), task, TrainConfig(epochs=1, batch_size=64), context=RunContext(model_factory=factory))
    t.fit()
    c = t.info["counts"]
    assert c["train"] == len(t.train_set) == c["seen"] and c["meta"] == 0
    assert c["train_per_class"] == t.train_set.class_counts(10).tolist() == c["seen_per_class"]
    assert c["selection"] == len(task.selection) and c["steps"] == math.ceil(len(task.train) / 64) == t.global_step
    lrw = fit("lrw", task, epochs=1).info["counts"]
    assert (lrw["meta"], lrw["meta_per_class"]) == (len(task.val), task.val.class_counts(10).tolist())


# ---- same tuning ------------------------------------------------------------------------------------------
def test_common_train_draws_draw_0_is_the_base_and_unrelated_spaces_differ(tmp_path):
    space = {"loguniform": [0.01, 1.0]}
    d = with_(datasets=[{"name": "digits", "train": {"lr": space}}], train={"epochs": 1, "lr": 0.05},
              methods={"erm": {}, "mwn": {"meta_lr": space}, "lrw": {"meta_lr": space}},
              search={"num_samples": 3, "hparam_seed": 0})
    trials = expand_trials(load_sweep(write(tmp_path, d)))
    first = {}
    for t in trials:
        first.setdefault(t.labels["method"], t)
    lrs = {m: [t.config.train.lr for t in trials if t.labels["method"] == m] for m in ("erm", "mwn", "lrw")}
    assert all(first[m].config.train.lr == 0.05 for m in lrs)                  # draw 0: the base lr
    assert lrs["erm"] == lrs["mwn"] == lrs["lrw"] and len(set(lrs["erm"])) == 3   # the same candidates
    assert first["mwn"].config.method.hparams["meta_lr"] == METHODS.get("mwn").Hparams().meta_lr
    unit = lambda v: math.log(v / 0.01) / math.log(100)   # noqa: E731  (the quantile of a draw)
    q = {"train.lr": sorted(unit(v) for v in set(lrs["erm"]) - {0.05})}
    for m in ("mwn", "lrw"):
        q[m] = sorted(unit(t.config.method.hparams["meta_lr"]) for t in trials if t.labels["method"] == m)[:2]
    for a, b in (("train.lr", "mwn"), ("train.lr", "lrw"), ("mwn", "lrw")):
        assert not np.allclose(q[a], q[b]), (a, b)                            # never the same quantiles
    renamed = expand_trials(load_sweep(write(tmp_path, {**d, "name": "other"})))
    assert sorted({t.config.train.lr for t in renamed}) != sorted(set(lrs["erm"]))   # seeded per sweep


def test_search_budget_errors_are_one_line(tmp_path):
    own = with_(methods={"erm": {"train": {"lr": {"loguniform": [0.01, 0.1]}}}}, search={"num_samples": 3})
    with pytest.raises(ConfigError, match=r"methods.erm.train.lr: a training setting is searched for every method"):
        load_sweep(write(tmp_path, own))
    one = with_(train={"epochs": 1, "lr": {"loguniform": [0.01, 0.1]}})
    with pytest.raises(ConfigError, match=r"search.num_samples: draw 0 is the base configuration.*got 1"):
        load_sweep(write(tmp_path, one))


# ---- declared data ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_sweep_states_its_selection_split_and_why(path):
    raw = yaml.safe_load(path.read_text())
    for ds in raw["datasets"]:
        assert "selection_fraction" in (ds.get("options") or {}), f"{path.name}: {ds['name']}"
    assert re.search(r"#.*selection split", path.read_text()), f"{path.name}: say which selection split and why"
