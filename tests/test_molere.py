"""MOLERE: splitter losses, the δ-capped re-split, hard examples to validation, gradients, BN, config, CLI."""
import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from benchmarks.data.load import DatasetConfig, load_task
from benchmarks.models import build_model
from benchmarks.data.regimes import RegimeConfig
from molere.config import ConfigError, TrainConfig, validate
from molere.molere import MOLERE, MOLEREHparams
from molere.splitter import (choose_validation, label_balance_kl, membership_weighted_loss,
                             split_size_kl)
from molere.trainer import RunContext
from tests.optional_data import needs_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------- loss terms
def test_label_balance_zero_for_balanced_soft_split_positive_for_skewed():
    y = torch.arange(40) % 4
    per_class = torch.tensor([0.2, 0.9, 0.5, 0.7])
    balanced = (torch.arange(40) // 4 % 2).float() * 0.5 + 0.25      # same spread of memberships in every class
    assert label_balance_kl(balanced, y).abs() < 1e-6
    assert label_balance_kl(torch.full((40,), 0.9), y).abs() < 1e-6
    skewed = per_class[y]
    assert label_balance_kl(skewed, y) > 1e-3
    assert label_balance_kl(per_class.flip(0)[y], y) > 1e-3


def test_label_balance_finite_and_uses_present_class_ids():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 3, 7, 0, 3, 7, 7, 0])                       # 3 of 10 classes present
    p = torch.rand(8, generator=g)
    v = label_balance_kl(p, y)
    assert torch.isfinite(v) and v > 0
    relabelled = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])              # same partition, other ids
    assert torch.allclose(v, label_balance_kl(p, relabelled))
    for extreme in (torch.ones(8), torch.zeros(8), (y == 3).float()):   # a side with no mass / a class alone
        assert torch.isfinite(label_balance_kl(extreme, y))
    p.requires_grad_()
    label_balance_kl(p, y).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_split_size_zero_at_target_positive_away():
    assert split_size_kl(torch.full((50,), 0.9), 0.9).abs() < 1e-7
    near, far = split_size_kl(torch.full((50,), 0.8), 0.9), split_size_kl(torch.full((50,), 0.5), 0.9)
    assert 0 < near < far
    assert split_size_kl(torch.full((50,), 0.95), 0.9) > 0
    assert torch.isfinite(split_size_kl(torch.ones(5), 0.9)) and torch.isfinite(split_size_kl(torch.zeros(5), 0.9))


def test_membership_weighted_loss_prefers_high_loss_members():
    losses = torch.tensor([0.1, 3.0])
    assert membership_weighted_loss(torch.tensor([0.1, 0.9]), losses) > membership_weighted_loss(
        torch.tensor([0.9, 0.1]), losses)


def test_choose_validation_caps_and_fills_by_rank():
    p = torch.tensor([0.9, 0.2, 0.7, 0.6, 0.1, 0.3])
    assert choose_validation(p, 2).tolist() == [0, 2]                       # over the cap: top by P(val)
    assert choose_validation(p, 5).tolist() == [0, 1, 2, 3, 5]              # under it: fill by rank
    assert choose_validation(p, 5, fill="none").tolist() == [0, 2, 3]       # only P(val) > 0.5
    s = choose_validation(p, 4, rule="sample", generator=torch.Generator().manual_seed(0))
    assert len(s) == 4 and len(set(s.tolist())) == 4


def test_choose_validation_class_balanced_ranks_within_every_class():
    p = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.05])
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert choose_validation(p, 4).tolist() == [0, 1, 2, 3]                 # one ranking: all of class 0
    assert choose_validation(p, 4, labels=y).tolist() == [0, 1, 5, 6]       # two per class, top P(val) in each
    assert choose_validation(p, 4, fill="none", labels=y).tolist() == [0, 1]   # candidates only


# ---------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("field,value", [("delta", 1.0), ("delta", 0.0), ("w_ratio", -1.0), ("w_bal", -0.5),
                                         ("lambda_val", -1.0), ("meta_every", 0), ("fill", "random"),
                                         ("warmup_fraction", 1.5)])
def test_bad_hparams_one_line_error_naming_field(field, value):
    with pytest.raises(ConfigError) as exc:
        validate(MOLEREHparams, {field: value}, prefix="method.hparams")
    msg = str(exc.value)
    assert f"method.hparams.{field}" in msg and "\n" not in msg


def test_defaults_follow_the_paper():
    hp = MOLEREHparams()
    assert (hp.delta, hp.meta_every, hp.warmup_fraction, hp.splitter_lr, hp.meta_lr) == (0.1, 5, 0.25, 1e-3, 1e-3)
    assert (hp.splitter_optimizer, hp.meta_optimizer, hp.fill, hp.val_term) == ("sgd", "sgd", "rank", "membership")


# ---------------------------------------------------------------------------- training on digits
class Recorder:
    def __init__(self):
        self.rows = []

    def on_epoch_end(self, trainer, epoch, metrics):
        self.rows.append({"epoch": epoch, "val_ids": set(trainer.meta_set.ids.tolist()),
                          "n_train": len(trainer.train_set), "metrics": dict(metrics)})


def make_trainer(task, model="mlp", epochs=4, **hp):
    torch.manual_seed(0)
    opts = {"hidden": [64]} if model == "mlp" else {"channels": [4, 8]}
    net = build_model(model, task.num_classes, task.input_shape, opts)
    rec = Recorder()
    t = MOLERE(net, task, TrainConfig(epochs=epochs, lr=0.05, batch_size=64), MOLEREHparams(**hp),
               RunContext(seed=0, callbacks=[rec]))
    return t, rec


@pytest.fixture(scope="module")
def noisy_run():
    """Digits with 40% symmetric noise: many misclassified examples; one warm-up epoch, then 3 re-splits."""
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(kind="symmetric", rate=0.4), 0)
    t, rec = make_trainer(task, meta_warmup_epochs=1, meta_every=1, splitter_optimizer="adam", splitter_lr=0.01)
    t.fit()
    return t, rec


def test_split_has_capped_size_every_epoch(noisy_run):
    t, rec = noisy_run
    pool = len(t.data.train) + len(t.data.val)
    assert len(t.pool) == pool and t.val_cap == round(0.1 * pool)
    for row in rec.rows:
        assert len(row["val_ids"]) == t.val_cap and row["n_train"] == pool - t.val_cap
        assert abs(row["metrics"]["split/val_fraction"] - 0.1) <= 0.02
        assert row["metrics"]["split/val_size"] == t.val_cap
    assert rec.rows[0]["metrics"]["split/warmup"] == 1.0 and rec.rows[1]["metrics"]["split/warmup"] == 0.0
    assert rec.rows[1]["val_ids"] != rec.rows[0]["val_ids"]              # re-split after warm-up
    last = rec.rows[-1]["metrics"]
    for key in ("split/val_class_tv", "split/val_misclassified", "split/train_misclassified", "split/val_margin",
                "split/train_margin", "train/splitter_gap", "train/splitter_ratio", "train/splitter_bal",
                "train/splitter_val"):
        assert math.isfinite(last[key]), key
    assert len(t.info["split_history"]) == 4 and t.info["val_cap"] == t.val_cap
    json.dumps(t.info)


def test_hard_examples_get_higher_validation_probability(noisy_run):
    t, _ = noisy_run
    p_val, preds, _ = t.pool_pass()
    wrong = preds != t.pool.labels
    assert 0.1 < wrong.float().mean() < 0.9
    assert p_val[wrong].mean() > p_val[~wrong].mean() + 0.05
    last = t.info["split_history"][-1]
    assert last["split/val_misclassified"] > last["split/train_misclassified"]


def test_warmup_split_is_fixed_and_random():
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(), 0)
    t, rec = make_trainer(task, epochs=2, meta_warmup_epochs=2)
    first = set(t.meta_set.ids.tolist())
    t.fit()
    assert all(r["val_ids"] == first for r in rec.rows)
    again, _ = make_trainer(task, epochs=2, meta_warmup_epochs=2)
    assert set(again.meta_set.ids.tolist()) == first                      # seeded
    assert abs(task.val.ids.float().mean() - t.meta_set.ids.float().mean()) > 1  # not the official val


def test_class_balanced_split_keeps_the_pool_class_shares():
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(kind="symmetric", rate=0.4), 0)
    t, rec = make_trainer(task, epochs=2, meta_warmup_epochs=1, meta_every=1, class_balanced=True)
    t.fit()
    after = rec.rows[-1]["metrics"]
    assert after["split/warmup"] == 0.0 and abs(after["split/val_fraction"] - 0.1) <= 0.02
    assert after["split/val_class_tv"] < 0.03          # per-class rounding only
    val = t.pool.labels[t.val_mask]
    shares = torch.bincount(val, minlength=10) / len(val) - torch.bincount(t.pool.labels, minlength=10) / len(t.pool)
    assert shares.abs().max() < 0.01


def test_fill_none_never_exceeds_cap():
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(), 0)
    t, rec = make_trainer(task, epochs=1, meta_warmup_epochs=0, fill="none")
    t.fit()
    assert len(rec.rows[0]["val_ids"]) <= t.val_cap


# ---------------------------------------------------------------------------- gradients and BN
def buffers(model):
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture()
def cnn_trainer():
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(kind="symmetric", rate=0.4), 0)
    t, _ = make_trainer(task, model="cnn", epochs=2, meta_warmup_epochs=0, meta_every=1, meta_net="features")
    t.model.train()
    t.on_epoch_start(0)
    return t


def batch_of(t):
    return next(t.train_set.batches(32, shuffle=True, generator=torch.Generator().manual_seed(0)))


def test_splitter_gradient_flows_from_its_loss_and_keeps_bn_stats(cnn_trainer):
    t = cnn_trainer
    before, theta = buffers(t.model), [p.detach().clone() for p in t.model.parameters()]
    terms = t.splitter_losses()
    assert {"gap", "val", "ratio", "bal"} <= set(terms)
    for name in ("gap", "val", "ratio"):
        grads = torch.autograd.grad(terms[name], list(t.splitter.parameters()), retain_graph=True, allow_unused=True)
        assert sum(g.abs().sum() for g in grads if g is not None) > 0, name
    old = [p.detach().clone() for p in t.splitter.parameters()]
    t.splitter_step()
    assert any(not torch.equal(a, b) for a, b in zip(old, t.splitter.parameters()))
    t.pool_pass()
    assert same(before, buffers(t.model))
    assert all(torch.equal(a, b) for a, b in zip(theta, t.model.parameters()))
    assert all(p.grad is None for p in t.model.parameters())


def test_meta_gradient_flows_through_lookahead_and_bn_matches_a_plain_step(cnn_trainer):
    t = cnn_trainer
    b = batch_of(t)
    reference = copy.deepcopy(t.model).train()
    with torch.no_grad():
        reference(b.x)                                                   # the real step's own BN update
    xv, yv = t.next_meta_batch()
    hg = t.lookahead.hypergradient(b.x, b.y, weight_fn=lambda o: t.example_weights(b, o), val_x=xv, val_y=yv,
                                   lr=t.lookahead_lr())
    grads = hg.backward_to(t.meta_parameters())
    assert sum(g.abs().sum() for g in grads) > 0
    phi = [p.detach().clone() for p in t.meta_parameters()]
    out = t.meta_step(b)
    assert any(not torch.equal(a, p) for a, p in zip(phi, t.meta_parameters()))
    assert out.losses.requires_grad and same(buffers(reference), buffers(t.model))


def test_option_b_gives_the_splitter_a_lookahead_gradient():
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(kind="symmetric", rate=0.4), 0)
    t, _ = make_trainer(task, epochs=1, meta_warmup_epochs=0, meta_every=1, val_term="lookahead", w_gap=0.0,
                        w_ratio=0.0, w_bal=0.0)
    t.model.train()
    t.on_epoch_start(0)
    b = batch_of(t)
    t.meta_step(b)
    terms = t.splitter_losses(b)
    grads = torch.autograd.grad(terms["val"], list(t.splitter.parameters()), allow_unused=True)
    assert sum(g.abs().sum() for g in grads if g is not None) > 0
    assert t.lookahead.last is None                                     # consumed


def test_delta_too_small_for_the_pool_is_a_config_error():
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(), 0)
    with pytest.raises(ConfigError, match="delta"):
        make_trainer(task, delta=1e-5)


# ---------------------------------------------------------------------------- CLI
@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["--dataset", "digits", "--model", "cnn", "--epochs", "4"],
    pytest.param(["--dataset", "fashion_mnist", "--data-opt", "train_subset=2000", "--epochs", "2"],
                 marks=needs_fashion_mnist, id="fashion_mnist"),
])
def test_cli_runs(tmp_path, args):
    out = subprocess.run([sys.executable, "-m", "benchmarks.train", *args, "--method", "molere",
                          "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "done" and 0 <= result["metrics"]["test/acc"] <= 1
    assert result["method_info"]["val_cap"] > 0


def test_checkpoint_restores_split_and_splitter():
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(), 0)
    t, _ = make_trainer(task, epochs=2, meta_warmup_epochs=0, meta_every=1)
    t.train_epoch()
    state = copy.deepcopy(t.state_dict())
    fresh, _ = make_trainer(task, epochs=2, meta_warmup_epochs=0, meta_every=1)
    assert not torch.equal(fresh.val_mask, t.val_mask)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.val_mask, t.val_mask)
    assert set(fresh.meta_set.ids.tolist()) == set(t.meta_set.ids.tolist())
    assert all(torch.equal(a, b) for a, b in zip(fresh.splitter.parameters(), t.splitter.parameters()))
