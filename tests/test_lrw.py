"""LRW on the official validation split: the meta-network learns through the look-ahead and never
touches the classifier (parameters or BatchNorm statistics)."""
import math

import pytest
import torch

from baselines.lrw import LRW
from benchmarks.models import build_model
from benchmarks.train import main as train_main
from molere.config import ConfigError, TrainConfig
from molere.data import ExampleSet, TaskData
from molere.metanet import MetaNet, MetaNetOptions
from molere.trainer import RunContext


def tiny_task(n=128, classes=4, with_val=True, val_noise=0) -> TaskData:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(classes, 1, 6, 6, generator=g) * 2

    def make(m, offset, noisy=0):
        y_true = torch.arange(m) % classes
        y = y_true.clone()
        y[:noisy] = (y[:noisy] + 1) % classes
        return ExampleSet(y, x=centers[y_true] + torch.randn(m, 1, 6, 6, generator=g), true_labels=y_true,
                          ids=torch.arange(m) + offset)

    return TaskData("tiny", train=make(n, 0), val=make(32, n, val_noise) if with_val else None,
                    test=make(32, 2 * n), num_classes=classes, input_shape=(1, 6, 6))


def cnn():
    torch.manual_seed(0)
    return build_model("cnn", 4, (1, 6, 6), {"channels": [8]})


def lrw(task=None, **hp):
    task = task or tiny_task()
    return LRW(cnn(), task, TrainConfig(epochs=1, batch_size=32, lr=0.1), LRW.Hparams(**hp), RunContext(seed=0))


def bn_state(model):
    return {n: b.clone() for n, b in model.named_buffers()}


def test_defaults_follow_the_paper():
    hp = LRW.Hparams()
    assert (hp.meta_every, hp.meta_lr, hp.meta_optimizer, hp.output) == (5, 1e-3, "sgd", "sigmoid")
    assert hp.meta_net == "input" and hp.meta_labels == "observed"
    assert hp.normalize is True   # deliberate deviation from Eq. 13: ERM's step size (molere.metanet)


def test_lrw_trains_on_train_and_validates_on_the_official_val():
    task = tiny_task()
    t = lrw(task)
    assert t.train_set.ids.tolist() == task.train.ids.tolist()
    assert t.meta_set.ids.tolist() == task.val.ids.tolist()
    assert isinstance(t.meta_opt, torch.optim.SGD) and t.meta_opt.param_groups[0]["lr"] == 1e-3


def test_lrw_without_val_split_is_a_config_error():
    with pytest.raises(ConfigError, match="method 'lrw' needs a validation split"):
        lrw(tiny_task(with_val=False))


def test_meta_labels_true_uses_clean_labels_of_the_val_set():
    task = tiny_task(val_noise=3)      # one meta batch = the whole val set, 3 labels flipped
    observed = lrw(task, meta_batch_size=32).next_meta_batch()[1].sort().values
    true = lrw(task, meta_batch_size=32, meta_labels="true").next_meta_batch()[1].sort().values
    assert torch.equal(observed, task.val.labels.sort().values)
    assert torch.equal(true, task.val.true_labels.sort().values)
    assert not torch.equal(observed, true)


@pytest.mark.parametrize("meta_net", ["input", "features"])
def test_meta_network_learns_through_the_lookahead(meta_net):
    t = lrw(meta_net=meta_net)
    t.model.train()
    batch = next(t.train_set.batches(32, shuffle=False))
    xv, yv = t.next_meta_batch()
    hg = t.lookahead.hypergradient(batch.x, batch.y, weight_fn=lambda o: t.example_weights(batch, o), val_x=xv,
                                   val_y=yv, lr=t.lr)
    grads = hg.backward_to(t.meta_parameters())
    assert sum(g.abs().sum().item() for g in grads) > 0
    phi = [p.detach().clone() for p in t.meta_parameters()]
    theta = [p.detach().clone() for p in t.model.parameters()]
    t.meta_step(batch)
    assert any(not torch.equal(a, p) for a, p in zip(phi, t.meta_parameters()))
    assert all(torch.equal(a, p) for a, p in zip(theta, t.model.parameters()))   # θ moves only in the real step


def test_feature_meta_network_leaves_the_classifier_alone():
    model = cnn().train()
    net = MetaNet(MetaNetOptions(meta_net="features"), model, (1, 6, 6))
    assert not {id(p) for p in net.parameters()} & {id(p) for p in model.parameters()}
    x = torch.randn(16, 1, 6, 6) * 3 + 1
    before = bn_state(model)
    w = net.weights(x)
    after = bn_state(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    w.sum().backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in net.parameters())
    model.forward_features(x)           # the check would notice a plain forward
    assert not torch.equal(before["body.1.running_mean"], bn_state(model)["body.1.running_mean"])


@pytest.mark.parametrize("opts", [dict(output="sigmoid", normalize=False), dict(output="softplus", normalize=False),
                                  dict(normalize=True), dict(meta_net="features", hidden=[], normalize=True)])
def test_weights_are_positive_and_normalised_when_asked(opts):
    net = MetaNet(MetaNetOptions(**opts), cnn(), (1, 6, 6))
    w = net.weights(torch.randn(20, 1, 6, 6))
    assert w.shape == (20,) and bool((w > 0).all())
    if opts.get("output", "sigmoid") == "sigmoid" and not opts.get("normalize"):
        assert bool((w < 1).all())
    if opts.get("normalize"):
        assert w.mean().item() == pytest.approx(1.0, abs=1e-5)
    assert isinstance(MetaNet(MetaNetOptions(meta_optimizer="adam"), cnn(), (1, 6, 6)).make_optimizer(),
                      torch.optim.Adam)


def test_features_variant_fits_an_epoch():
    t = lrw(meta_net="features", meta_every=2)
    out = t.fit()
    assert math.isfinite(out["train/loss"]) and out["train/weight_mean"] == pytest.approx(1.0, abs=1e-5)
    assert math.isfinite(out["train/meta_val_loss"])


def test_cli(tmp_path, capsys):
    assert train_main(["--dataset", "digits", "--model", "cnn", "--model-opt", "channels=[8]", "--method", "lrw",
                       "--epochs", "2", "--train", "batch_size=256", "--out", str(tmp_path / "run")]) == 0
    assert '"train/meta_val_loss"' in capsys.readouterr().out
