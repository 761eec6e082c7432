"""The model-selection split: carved from the labelled pool after the regime (it follows the training
distribution), before val is drawn, never trained on by any method (train-twice variants and MOLERE
included), evaluated every evaluation epoch as selection/acc (observed labels) and selection/acc_true; and
train.* search spaces (common to every method, draw 0 = the base configuration)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks import run
from benchmarks.trial.config import MethodConfig, TrialConfig
from benchmarks.data.load import DatasetConfig, carve_selection, load_task
from benchmarks.models import build_model
from benchmarks.data.regimes import RegimeConfig
from benchmarks.trial.store import RunDir
from benchmarks.sweep.plan import expand_trials
from benchmarks.sweep.schema import load_sweep
from benchmarks.trial.execute import run_trial
from molere.config import ConfigError, TrainConfig
from molere.registry import METHODS
from molere.trainer import RunContext
from tests.test_contract import tiny_task
from tests.test_sweep_schema import BASE, no_launch, with_, write  # noqa: F401  (fixture)


def test_carved_from_the_labelled_pool_after_the_regime_once_per_split_seed():
    noisy = RegimeConfig(kind="symmetric", rate=0.4)
    ds = DatasetConfig(name="digits")
    a, b = load_task(ds, noisy, 0), load_task(ds, noisy, 0)
    full = load_task(DatasetConfig(name="digits", options={"selection_fraction": 0}), RegimeConfig(), 0)
    assert a.selection is not None and torch.equal(a.selection.ids, b.selection.ids)     # reproducible
    sel, train, val = set(a.selection.ids.tolist()), set(a.train.ids.tolist()), set(a.val.ids.tolist())
    assert not sel & train and not sel & val and not sel & set(a.test.ids.tolist())
    pool = set(full.train.ids.tolist()) | set(full.val.ids.tolist())
    assert sel | train | val == pool and full.selection is None
    assert abs(len(sel) - 0.1 * len(pool)) <= 10                                      # the default 10 %
    assert a.selection.class_counts(10).min() > 0                                      # stratified
    assert abs(len(val) - 0.1 * (len(pool) - len(sel))) <= 10   # then val: the dataset's share of the rest
    # the regime's one draw over the pool: observed labels noisy, truth kept
    truth = dict(zip(torch.cat([full.train.ids, full.val.ids]).tolist(),
                     torch.cat([full.train.labels, full.val.labels]).tolist()))
    assert [truth[i] for i in a.selection.ids.tolist()] == a.selection.true_labels.tolist()
    assert 0.3 < a.info["selection_noise_rate"] < 0.5
    assert a.info["selection_size"] == len(sel) == a.info["sizes"]["selection"]
    assert a.info["train_class_counts"] == torch.bincount(a.train.labels, minlength=10).tolist()
    # fixed by the split seed (every trial seed, method and draw sees the same examples), noise by the trial seed
    other = load_task(ds, noisy, 1)
    assert torch.equal(other.selection.ids, a.selection.ids)
    assert not torch.equal(other.selection.labels, a.selection.labels)
    assert not torch.equal(load_task(DatasetConfig(name="digits", options={"split_seed": 1}), noisy, 0).selection.ids,
                           a.selection.ids)
    lt = load_task(ds, RegimeConfig(kind="longtail", imbalance=10), 0)   # long tail: it follows the tail too
    assert set(lt.selection.ids.tolist()) <= pool and not set(lt.train.ids.tolist()) & set(lt.selection.ids.tolist())
    shares = lambda e: e.class_counts(10).float() / len(e)   # noqa: E731
    assert (shares(lt.selection) - shares(lt.train)).abs().sum() / 2 < 0.05
    with pytest.raises(ConfigError, match="selection_fraction: Input should be less than or equal to 0.5"):
        load_task(DatasetConfig(name="digits", options={"selection_fraction": 0.9}), noisy, 0)


def poisoned_task():
    """tiny_task with a selection split whose inputs are NaN: any training or meta use of one of them makes a
    loss, a weight or a BatchNorm statistic non-finite."""
    task = carve_selection(tiny_task(n=320), 0.2)
    s = task.selection
    s.x = torch.full_like(s.x, float("nan"))
    return task


@pytest.mark.parametrize("name", METHODS.names())
def test_no_method_ever_trains_on_a_selection_example(name):
    task = poisoned_task()
    sel = set(task.selection.ids.tolist())
    torch.manual_seed(0)
    factory = lambda: build_model("cnn", task.num_classes, task.input_shape, {"channels": [4, 4]})  # noqa: E731
    method = METHODS.get(name)
    trainer = method(factory(), task, TrainConfig(epochs=2, batch_size=32, lr=0.05), method.Hparams(),
                     RunContext(seed=0, model_factory=factory))
    seen = set()
    for ex in (trainer.train_set, trainer.meta_set, getattr(trainer, "pool", None)):
        seen |= set() if ex is None else set(ex.ids.tolist())
    assert seen and not seen & sel, f"{name} holds selection examples in its training / meta / pool sets"
    final = trainer.fit()                         # every split it draws from during training (incl. re-splits)
    assert math.isfinite(final["train/loss"])
    assert all(torch.isfinite(t).all() for t in (*trainer.model.parameters(), *trainer.model.buffers())
               if t.is_floating_point()), f"{name} trained on a (NaN) selection example"
    assert "selection/acc" in final and "selection/acc_true" in final   # evaluated, and only evaluated
    assert not set(trainer.train_set.ids.tolist()) & sel


def test_the_poison_would_be_caught():
    """Control for the test above: a trainer that does train on the selection split ends non-finite."""
    task = poisoned_task()
    bad = carve_selection(tiny_task(n=320), 0.2)
    bad.train = type(task.train).concat(task.train, task.selection)
    factory = lambda: build_model("cnn", task.num_classes, task.input_shape, {"channels": [4, 4]})  # noqa: E731
    trainer = METHODS.get("erm")(factory(), bad, TrainConfig(epochs=1, batch_size=32, lr=0.05))
    trainer.fit()   # the divergence guard stops it at the first non-finite loss (molere.guard)
    assert trainer.guard.divergence is not None and trainer.guard.divergence.criterion == "nonfinite"


def test_selection_accuracy_uses_observed_labels_and_records_the_true_ones():
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(kind="symmetric", rate=0.4), 0)
    factory = lambda: build_model("mlp", task.num_classes, task.input_shape, {})  # noqa: E731
    trainer = METHODS.get("erm")(factory(), task, TrainConfig(epochs=1, batch_size=64, lr=0.05))
    trainer.fit()
    metrics, outs = trainer.evaluate()
    preds = trainer.logits(task.selection).argmax(1)
    assert metrics["selection/acc"] == pytest.approx((preds == task.selection.labels).float().mean().item())
    assert metrics["selection/acc_true"] == pytest.approx((preds == task.selection.true_labels).float().mean().item())
    assert metrics["selection/acc"] != metrics["selection/acc_true"]
    assert np.array_equal(outs["selection"].labels, task.selection.labels.numpy())


def test_every_evaluated_epoch_logs_selection_accuracy(tmp_path):
    cfg = TrialConfig(dataset=DatasetConfig(name="digits"), regime=RegimeConfig(kind="symmetric", rate=0.2),
                      method=MethodConfig(name="erm"), train=TrainConfig(epochs=3, batch_size=64, eval_every=1))
    result = run_trial(cfg, tmp_path / "t")
    rows = RunDir(tmp_path / "t").metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all("selection/acc" in r and "selection/acc_true" in r
                                                           for r in rows)
    assert result["metrics"]["selection/acc"] == rows[-1]["selection/acc"]
    assert result["info"]["selection_size"] > 0


# ---- train.* search spaces ------------------------------------------------------------------------
def test_train_space_from_the_command_line_validates_and_draws_reproducibly(tmp_path, capsys, no_launch):  # noqa: F811
    path = write(tmp_path, with_(methods={"erm": {}, "mwn": {}, "lrw_easy": {}}, seeds=[0, 1],
                                 search={"num_samples": 3, "hparam_seed": 4}))
    space = "train.lr={loguniform: [0.01, 0.1]}"
    trials = expand_trials(load_sweep(path, [space]))
    lrs = {m: sorted({t.config.train.lr for t in trials if t.labels["method"] == m}) for m in ("erm", "mwn")}
    assert len(lrs["erm"]) == 3 and BASE_LR in lrs["erm"]                           # draw 0: the base lr
    assert all(0.01 <= v < 0.1 for v in lrs["erm"] if v != BASE_LR)
    assert lrs["erm"] == lrs["mwn"]                      # one train stream: draw k is the same for every method
    assert [t.config.train.lr for t in expand_trials(load_sweep(path, [space]))] == [t.config.train.lr for t in trials]
    again = expand_trials(load_sweep(path, [space, "search.hparam_seed=5"]))
    assert sorted({t.config.train.lr for t in again if t.labels["method"] == "erm"}) != lrs["erm"]
    erm = [t for t in trials if t.labels["method"] == "erm"]
    assert len({t.labels["hparams_id"] for t in erm}) == 3           # the train draw is part of the draw's id
    refs = [t for t in trials if t.reference_only]                   # lrw_easy reuses ERM's draw k as reference;
    assert refs and {t.labels["method"] for t in refs} == {"erm_train_val"}   # the same-data reference is added
    assert {t.erm_id for t in trials if t.labels["method"] == "lrw_easy"} <= {t.trial_id for t in erm}
    assert run.main([str(path), "--dry-run", "--set", space]) == 0
    out = capsys.readouterr().out
    assert 'search space (digits, erm): train.lr ~ {"loguniform":[0.01,0.1]} (3 draws)' in out
    drawn = next(v for v in lrs["erm"] if v != BASE_LR)
    assert f'"train.lr":{drawn}'[:20] in out


@pytest.mark.parametrize("override,expected", [
    ("train.lr={loguniform: [0, 0.1]}", "train.lr: {loguniform: [lo, hi]} needs 0 < lo"),
    ("train.lr={loguniformm: [0.01, 0.1]}", "train.lr: unknown search space 'loguniformm' (did you mean"),
    ("train.lr={choice: [0.1, -1]}", "train.lr: Input should be greater than 0 (got -1)"),
    ("train.epochs={uniform: [1, 3]}", "train.epochs: Input should be a valid integer"),
    ("methods.erm.train.weight_decay={grid: [0.1]}", "methods.erm.train.weight_decay: a training setting is searched "
                                                     "for every method alike"),
    ("methods.erm.train=3", "methods.erm.train: a mapping of training settings"),
    ("train.device={choice: [cpu, cuda]}", "train.device: Input should be a valid string"),
])
def test_bad_train_spaces_stop_with_one_line_and_exit_2(override, expected, tmp_path, capsys, no_launch):  # noqa: F811
    path = write(tmp_path, with_(search={"num_samples": 4}))
    with pytest.raises(SystemExit) as exc:
        run.main([str(path), "--set", override, "--results", str(tmp_path / "r")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "r").exists()


def test_method_spaces_are_in_the_plan_and_train_spaces_common(tmp_path):
    d = with_(train={"epochs": 1, "lr": {"grid": [0.01, 0.2]}},
              methods={"erm": {}, "mwn": {"meta_lr": {"grid": [0.001, 0.01]}}})
    trials = expand_trials(load_sweep(write(tmp_path, d)))
    erm = [t for t in trials if t.labels["method"] == "erm"]
    assert sorted(t.config.train.lr for t in erm) == [0.01, 0.2]
    assert sorted({t.config.train.lr for t in trials if t.labels["method"] == "mwn"}) == [0.01, 0.2]
    rec = erm[0].record()
    assert rec["search_space"] == {"train.lr": {"grid": [0.01, 0.2]}} and rec["reference_only"] is False
    assert [t for t in trials if t.labels["method"] == "mwn"][0].record()["search_space"] == \
        {"meta_lr": {"grid": [0.001, 0.01]}, "train.lr": {"grid": [0.01, 0.2]}}


BASE_LR = TrainConfig().lr
