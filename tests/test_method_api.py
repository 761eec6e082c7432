"""A method is one class: meta methods fail fast or run their meta step, and a plugin's card reaches the
report (results, meta-effect table, gain figure) with no edit of the repository."""
from __future__ import annotations

import copy
import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.models import build_model
from benchmarks.report import build_report
from benchmarks.report import figures as F
from benchmarks.report.cards import MethodCard, card_for
from benchmarks.report.methods import Methods
from benchmarks.trial.store import RunDir, write_json
from benchmarks.sweep.plan import expand_trials
from benchmarks.sweep.schema import load_sweep
from molere.config import ConfigError, TrainConfig
from molere.registry import METHODS, MethodRegistry, load_plugins
from molere.lookahead import DetachedWeightsError
from molere.reweighting import MetaHparams, MetaTrainer, ReweightingHparams, ReweightingTrainer
from molere.trainer import RunContext, Trainer
from tests.test_contract import tiny_task

PLUGINS = ["tests.plugins.spl", "tests.plugins.class_weights", "tests.plugins.meta_softmax"]


@pytest.fixture(autouse=True, scope="module")
def plugins():
    """Register the newcomer plugins for this module only (other tests see the built-in registry)."""
    before = dict(METHODS._entries)
    load_plugins(PLUGINS)
    yield
    METHODS._entries.clear()
    METHODS._entries.update(before)
    for mod in PLUGINS:
        sys.modules.pop(mod, None)


def make(cls, hparams=None, epochs=1, task=None):
    task = task or tiny_task()
    torch.manual_seed(0)
    model = build_model("mlp", task.num_classes, task.input_shape, {"hidden": [16]})
    hp = cls.Hparams(**(hparams or {}))
    return cls(model, task, TrainConfig(epochs=epochs, batch_size=32, lr=0.05), hp, RunContext(seed=0))


class _Weights(ReweightingTrainer):
    """A per-class weighting function, as a newcomer writes it (no split() of its own)."""

    def setup(self):
        self.a = torch.nn.Parameter(torch.zeros(self.data.num_classes))

    def example_weights(self, batch, losses):
        return self.data.num_classes * torch.softmax(self.a, 0)[batch.y]

    def meta_parameters(self):
        return [self.a]

    def meta_optimizer(self):
        return torch.optim.SGD([self.a], lr=1.0)


def test_reweighting_plugin_without_a_meta_set_source_fails_at_construction():
    class NoSource(_Weights):
        Hparams = MetaHparams            # no meta_source: the default split() cannot choose a meta set

    class NoMetaSet(_Weights):
        def split(self):
            return self.data.train, None  # the silent failure of old: ERM with a φ that never learns

    for cls in (NoSource, NoMetaSet):
        with pytest.raises(ConfigError) as err:
            make(cls)
        assert "\n" not in str(err.value) and ("meta_source" in str(err.value) or "meta set" in str(err.value))


def test_reweighting_plugin_with_the_default_source_runs_its_meta_step_in_epoch_one():
    t = make(METHODS.get("class_weights"))
    assert t.meta_set is not None and set(t.meta_set.ids.tolist()) == set(t.data.val.ids.tolist())
    metrics = t.train_epoch()
    assert t.lookahead.calls == math.ceil(len(t.train_set) / 32)       # meta_every=1: every step
    assert math.isfinite(metrics["train/meta_val_loss"])
    assert not torch.equal(t.class_logits.detach(), torch.zeros(t.data.num_classes))   # φ learned
    assert metrics["train/weight_std"] > 0                               # the weights are no longer uniform


@pytest.mark.parametrize("name", ["spl", "meta_softmax"])
def test_the_other_newcomer_plugins_train(name):
    t = make(METHODS.get(name), epochs=2)
    final = t.fit()
    assert final["epoch"] == 2 and math.isfinite(final["train/loss"]) and final["test/acc"] > 0.5
    if name == "spl":
        assert 0 < final["train/selected"] <= 1
    else:
        assert t.lookahead.calls > 0 and math.isfinite(final["train/meta_val_loss"])


def test_roles_and_display_hints_are_not_inherited_and_bad_ones_are_refused():
    default = MethodCard(label="meta_softmax", name="meta_softmax")
    assert card_for("meta_softmax", METHODS.get("meta_softmax")) == default
    assert METHODS.get("class_weights_control").control_of == "class_weights"
    assert METHODS.controls_of("class_weights") == ["class_weights_control"]
    reg = MethodRegistry("method")
    sub = reg.register("sub")(type("Sub", (METHODS.get("erm"),), {"__doc__": "a subclass of ERM"}))
    assert (sub.role, sub.control_of, sub.display) == ("method", None, {})   # ERM's role is its own
    with pytest.raises(ValueError, match="control_of"):
        reg.register("bad")(type("Bad", (Trainer,), {"role": "control"}))
    with pytest.raises(ValueError, match="role must be one of"):
        reg.register("bad")(type("Bad", (Trainer,), {"role": "baseline"}))
    with pytest.raises(TypeError, match="display"):
        reg.register("bad")(type("Bad", (Trainer,), {"display": "X"}))
    assert "bad" not in reg
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        card_for("odd", reg.register("odd")(type("Odd", (Trainer,), {"display": {"colour": "red"}})))
    with pytest.raises(ValueError, match="control_of"):
        MethodCard(role="control")
    with pytest.raises(ValueError, match="ordering"):
        MethodCard(role="reference", ordering=1)
    with pytest.raises(ValueError, match="ordering"):
        card_for("ctl", reg.register("ctl")(type("Ctl", (Trainer,), {"role": "control", "control_of": "sub",
                                                                      "display": {"ordering": 1}})))


# ---- a plugin method in the report -------------------------------------------------------------
SWEEP = """name: plugin_report
datasets: [{name: digits}]
methods: {erm: {}, class_weights: {}, class_weights_control: {}}
seeds: [0, 1, 2]
plugins: [tests.plugins.class_weights]
"""
ACC = {"erm": 0.80, "class_weights": 0.84, "class_weights_control": 0.79,
       "erm_train_val": 0.81}   # planned as the same-data reference of class_weights (it learns from val)


def planned_store(root):
    """The plan as the sweep runner writes it (cards recorded), with made-up finished trials."""
    (root / "sweep.yaml").write_text(SWEEP)
    trials = expand_trials(load_sweep(root / "sweep.yaml"))
    write_json(root / "plan.json", [t.record() for t in trials])
    ids = np.arange(100)
    for t in trials:
        method, seed = t.labels["method"], t.labels["seed"]
        acc = ACC[method] + 0.01 * seed * (method == "class_weights")
        run = RunDir(root / "trials" / t.trial_id)
        run.start({"trial_id": t.trial_id, "config": t.config.model_dump(mode="json")})
        run.append_metrics({"epoch": 1, "test/acc": acc - 0.1})
        run.append_metrics({"epoch": 2, "test/acc": acc})
        m = np.linspace(-1, 1, 100) * (acc if method != "erm" else 0.5)
        run.save_margins({"test_ids": ids, "test_margins": m, "test_labels": ids % 3, "test_preds": ids % 3})
        run.finish({"trial_id": t.trial_id, "status": "done", "metrics": {"epoch": 2, "test/acc": acc}})


def legends(monkeypatch):
    seen = {}
    save = F._save

    def keep(fig, folder, name):
        seen[name] = {ax.get_title(): [t.get_text() for t in ax.get_legend().get_texts()]
                      for ax in fig.axes if ax.get_legend() is not None}
        seen[name]["figure"] = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        seen[name]["panels"] = [" ".join(line for line in ax.get_title().split("\n") if not line.startswith("mean "))
                                 for ax in fig.axes if ax.get_visible()]   # a long label wraps
        seen[name]["rows"] = [ax.get_ylabel() for ax in fig.axes if ax.get_visible() and ax.get_ylabel()]
        return save(fig, folder, name)
    monkeypatch.setattr(F, "_save", keep)
    return seen


CLASS_W = "Class-W (observed-label meta set, val split)"   # the label states the declared meta set


def check_report(root, out, seen):
    build_report(root, out)
    results = pd.read_csv(out / "tables" / "results.csv").set_index("method")
    assert results.loc["class_weights", "label"] == CLASS_W
    assert results.loc["class_weights", "gain over ERM (pts) [95% CI], p"].startswith("+5.00 [")
    assert results.loc["erm", "gain over ERM (pts) [95% CI], p"] == "reference"
    meta = pd.read_csv(out / "tables" / "meta_effect.csv").set_index("method")
    row = meta.loc["class_weights"]
    assert (row["label"], row["control"], row["control label"]) == (CLASS_W, "class_weights_control",
                                                                    "ERM, meta set withheld")
    assert row["method − control (pts)"].startswith("+6.00 [")
    gains = seen["gains.png"]["Other baselines and same-split ERM controls"]
    assert gains == ["ERM (train+val)", CLASS_W, "ERM, meta set withheld"]
    assert seen["training_curves.png"]["rows"] == ["ERM", "ERM (train+val)", CLASS_W, "ERM, meta set withheld"]
    same = pd.read_csv(out / "tables" / "same_data.csv").set_index("method")
    assert same.loc["class_weights", "same-data reference"] == "ERM (train+val)"
    assert {f"{CLASS_W} − ERM", "ERM, meta set withheld − ERM"} <= set(seen["margin_deltas_digits_clean.png"]["panels"])
    mc = Methods.from_plan(json.loads((root / "plan.json").read_text()))
    assert F.color("class_weights", mc) == F.color("class_weights_control", mc) == "#7f7f7f"


def test_plugin_card_reaches_every_table_and_figure_and_renders_without_the_plugin(tmp_path, monkeypatch):
    planned_store(tmp_path)
    seen = legends(monkeypatch)
    check_report(tmp_path, tmp_path / "report", seen)
    # the card is read from plan.json: without the plugin registered the store renders the same
    for name in ("class_weights", "class_weights_control"):
        monkeypatch.delitem(METHODS._entries, name)
    seen.clear()
    check_report(tmp_path, tmp_path / "report2", seen)


# ---- the meta-method API: required hooks, the outputs record, detached weights, meta_lookahead --------
def test_a_reweighting_plugin_missing_meta_optimizer_fails_at_registration_naming_it():
    class NoOptimizer(ReweightingTrainer):
        def setup(self):
            self.a = torch.nn.Parameter(torch.zeros(self.data.num_classes))

        def example_weights(self, batch, out):
            return torch.softmax(self.a, 0)[batch.y]

        def meta_parameters(self):
            return [self.a]

    with pytest.raises(TypeError, match=r"'no_optimizer' \(NoOptimizer\) does not implement meta_optimizer, "
                                        r"required by ReweightingTrainer"):
        METHODS.register("no_optimizer")(NoOptimizer)
    assert "no_optimizer" not in METHODS

    class NoStep(MetaTrainer):
        pass

    with pytest.raises(TypeError, match="'no_step'.*training_step"):
        METHODS.register("no_step")(NoStep)


def test_a_meta_trainer_carrying_an_option_it_would_ignore_is_refused_at_registration():
    class Ignores(MetaTrainer):
        Hparams = ReweightingHparams      # weights_after_meta: read by ReweightingTrainer only

        def training_step(self, batch):
            return self.forward_outputs(batch).losses.mean()

    with pytest.raises(TypeError, match="'ignores'.*weights_after_meta"):
        METHODS.register("ignores")(Ignores)
    assert "weights_after_meta" not in METHODS.get("l2rw").Hparams.model_fields
    assert "weights_after_meta" in METHODS.get("mwn").Hparams.model_fields


class EntropyWeights(ReweightingTrainer):
    """w_i = 2·sigmoid(a·H(p_i) + b): a weighting function of the prediction's entropy."""

    def setup(self):
        self.ab = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        self.features_seen = []

    def entropy(self, batch, out):
        p = out.logits.softmax(1)
        return -(p * p.clamp_min(1e-12).log()).sum(1)

    def example_weights(self, batch, out):
        self.features_seen.append(None if out.features is None else tuple(out.features.shape))
        return 2 * torch.sigmoid(self.ab[0] * self.entropy(batch, out) + self.ab[1])

    def meta_parameters(self):
        return [self.ab]

    def meta_optimizer(self):
        return torch.optim.SGD([self.ab], lr=1.0)


class EntropyBySecondForward(EntropyWeights):
    """The same weights as a method without the outputs record has to compute them: a second forward."""

    def entropy(self, batch, out):
        with torch.no_grad():
            p = self.model(batch.x).softmax(1)
        return -(p * p.clamp_min(1e-12).log()).sum(1)


def count_forwards(cls):
    t = make(cls, {"meta_every": 2})
    forwards = []
    t.model.register_forward_hook(lambda module, args, out: forwards.append(len(args[0])))
    metrics = t.train_epoch()
    return t, metrics, len(forwards)


def test_weights_on_the_logits_entropy_need_no_second_forward():
    t, metrics, forwards = count_forwards(EntropyWeights)
    steps = math.ceil(len(t.train_set) / 32)
    meta_steps = t.lookahead.calls
    assert meta_steps == math.ceil(steps / 2)
    assert forwards == steps + meta_steps      # one training forward per step + the meta batch's of a meta step
    assert not torch.equal(t.ab.detach(), torch.tensor([1.0, 0.0]))     # φ learned from the entropy weights
    assert metrics["train/weight_std"] > 0
    assert {f[1] for f in t.features_seen} == {16} and None not in t.features_seen   # features too, every step
    _, _, second = count_forwards(EntropyBySecondForward)
    assert second == forwards + steps + meta_steps   # the counter sees each second forward (2 per meta step)


class Detached(EntropyWeights):
    def example_weights(self, batch, out):
        return super().example_weights(batch, out).detach()


class IgnoresPhi(EntropyWeights):
    def example_weights(self, batch, out):
        return torch.ones(len(batch.y)) + 0 * self.entropy(batch, out)


@pytest.mark.parametrize("cls", [Detached, IgnoresPhi])
def test_weights_without_a_graph_to_phi_give_one_clear_error_naming_the_method(cls):
    t = make(cls)
    with pytest.raises(DetachedWeightsError, match=f"method '{cls.__name__}': example_weights\\(\\) must return "
                                                   "weights built from meta_parameters"):
        t.train_epoch()


def test_meta_lookahead_returns_the_hypergradient_and_commits_the_forwards_statistics():
    task = tiny_task()
    torch.manual_seed(0)
    model = build_model("cnn", task.num_classes, task.input_shape, {"channels": [8]})
    t = METHODS.get("meta_softmax")(model, task, TrainConfig(epochs=1, batch_size=32, lr=0.05),
                                    METHODS.get("meta_softmax").Hparams(), RunContext(seed=0))
    b = next(t.train_set.batches(32))
    reference = copy.deepcopy(t.model).train()
    with torch.no_grad():
        reference(b.x)                                   # what a plain training forward does to BN's statistics
    hg = t.meta_lookahead(b)
    assert hg.dw.shape == (32,) and torch.isfinite(hg.dw).all() and hg.dw.abs().sum() > 0
    assert hg.outputs.logits.shape == (32, task.num_classes) and hg.train_losses.requires_grad
    assert hg.outputs.features.shape == (32, 8)
    assert all(torch.equal(x, y) for x, y in zip(reference.buffers(), t.model.buffers()))
    assert t.lookahead.calls == 1 and len(t._step_logs["meta_val_loss"]) == 1
