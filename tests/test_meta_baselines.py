"""MBR, BiLAW, GDW, MAPLE: their maths (formula, finite-difference hypergradients through the shared
oracle, constraints) and that each does something (weights spread, learned parameters move)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from baselines.bilaw import multiclass_margins
from baselines.gdw import ClassTerms, class_step, zero_mean
from baselines.maple import ood_objective
from baselines.mbr import mbr_weights
from molere.margins import probabilistic_margin
from tests.oracle import batch_of, central_difference, toy_task, trainer, val_after_step


def fixed_meta(tr, monkeypatch, n=12):
    xv, yv = tr.data.test.x[:n], tr.data.test.labels[:n]
    monkeypatch.setattr(tr, "next_meta_batch", lambda: (xv, yv))
    return xv, yv


# ---- MBR --------------------------------------------------------------------------------------------
def test_mbr_weights_equal_the_mail_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 5, generator=g, dtype=torch.float64) * 3
    logits[0] = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])          # a tie between the true class and another
    y = torch.randint(0, 5, (40,), generator=g)
    y[0] = 0
    p = torch.softmax(logits, 1)
    top2 = p.topk(2, dim=1)
    second = torch.where(top2.indices[:, 0] == y, top2.values[:, 1], top2.values[:, 0])   # max over k ≠ y
    expected = 3 * torch.sigmoid(0.7 * (second - p[torch.arange(40), y] - 1.5))
    torch.testing.assert_close(mbr_weights(logits, y, slope=0.7, bias=-1.5), expected.float())
    assert expected[0] == pytest.approx(3 * torch.sigmoid(torch.tensor(0.7 * -1.5)).item())


def test_mbr_trains_unweighted_during_burn_in_then_weights_low_margins_up():
    tr = trainer("mbr", epochs=4, burn_in=0.5)
    assert tr.burn_in_epochs == 2
    stds = []
    for _ in range(4):
        stds.append(tr.train_epoch()["train/weight_std"])
    assert stds[:2] == [0.0, 0.0] and min(stds[2:]) > 0
    batch = batch_of(tr.train_set, 32)
    logits = tr.model(batch.x)
    w = tr.example_weights(logits, batch.y)
    loss = tr.training_step(batch)
    torch.testing.assert_close(loss, (w * F.cross_entropy(tr.model(batch.x), batch.y, reduction="none")).mean())
    margin = probabilistic_margin(logits.detach(), batch.y)
    assert stats.spearmanr(w.detach().numpy(), margin.numpy()).statistic == pytest.approx(-1.0)


# ---- BiLAW ------------------------------------------------------------------------------------------
def test_multiclass_margins_are_true_minus_each_class():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 2])
    p = torch.softmax(logits, 1)
    m = multiclass_margins(logits, y)
    torch.testing.assert_close(m, torch.stack([p[0, 0] - p[0], p[1, 2] - p[1]]))
    assert m[0, 0] == 0 and m[1, 2] == 0


@pytest.mark.parametrize("hypergrad", ["reverse", "forward"])
def test_bilaw_weight_net_gradient_matches_the_oracle(monkeypatch, hypergrad):
    tr = trainer("bilaw", normalize=True, hypergrad=hypergrad)
    tr.weight_net.double()
    xv, yv = fixed_meta(tr, monkeypatch)
    grads = {}
    monkeypatch.setattr(tr.meta_opt, "step", lambda: grads.update(
        {n: p.grad.clone() for n, p in tr.weight_net.named_parameters()}))
    batch = batch_of(tr.train_set)
    margins = multiclass_margins(tr.model(batch.x), batch.y).detach()
    tr.meta_step(batch)
    w0 = tr.weight_net.net[0].weight

    def outer(weight):   # the oracle: weights from the perturbed first layer, mean 1, a real SGD step
        saved = w0.detach().clone()
        with torch.no_grad():
            w0.copy_(weight)
        w = tr.weight_net(margins).detach()
        with torch.no_grad():
            w0.copy_(saved)
        return val_after_step(tr.model, batch.x, batch.y, w * len(w) / w.sum(), tr.lookahead_lr(), xv, yv)

    exact = grads["net.0.weight"].flatten()
    entries = exact.abs().topk(3).indices.tolist()
    fd = central_difference(outer, w0.detach(), entries)
    assert exact[entries].abs().min() > 1e-8
    torch.testing.assert_close(exact[entries], fd, rtol=1e-4, atol=1e-9)


def test_bilaw_weights_spread_after_training():
    tr = trainer("bilaw", task=toy_task(n=96, noisy_every=4), epochs=3)
    tr.fit()
    w = tr.raw_weights(batch_of(tr.train_set, 64), None)
    assert (w.std() / w.mean()).item() > 0.01


# ---- GDW --------------------------------------------------------------------------------------------
def test_gdw_zero_mean_constraint_and_clipped_step():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, 4, generator=g, dtype=torch.float64), 1)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    lam = zero_mean(torch.rand(6, 4, generator=g, dtype=torch.float64) + 0.5, p, y)
    onehot = F.one_hot(y, 4).double()
    torch.testing.assert_close((lam * (p - onehot)).sum(1), torch.zeros(6, dtype=torch.float64))
    grad = torch.randn(6, 4, generator=g, dtype=torch.float64)
    step = (5 * grad / grad.abs().sum()).clamp(-0.2, 0.2)
    torch.testing.assert_close(class_step(lam, grad, 5.0, 0.2), lam - step)
    assert (step.abs() == 0.2).any() and (step.abs() < 0.2).any()   # the clip binds for some entries only
    assert torch.equal(class_step(lam, torch.zeros_like(grad), 5.0, 0.2), lam)


@pytest.mark.parametrize("hypergrad", ["reverse", "finite_diff"])
def test_gdw_class_weight_hypergradient_matches_the_oracle(monkeypatch, hypergrad):
    tr = trainer("gdw", hypergrad=hypergrad, fd_eps=1e-4)
    xv, yv = fixed_meta(tr, monkeypatch)
    batch = batch_of(tr.train_set)
    terms = ClassTerms(0.999)
    lam = torch.rand(16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    hg = tr.lookahead.hypergradient(batch.x, batch.y, val_x=xv, val_y=yv, lr=tr.lookahead_lr(),
                                    weight_fn=lambda _: lam, losses_fn=terms)
    coef = terms.coef

    def outer(weights):
        return val_after_step(tr.model, batch.x, batch.y, weights, tr.lookahead_lr(), xv, yv,
                              losses_fn=lambda z, _: coef * z)

    entries = [0, 1, 2, 7, 20, 47]
    fd = central_difference(outer, lam, entries)
    assert fd.abs().max() > 1e-6
    tol = 1e-6 if hypergrad == "reverse" else 1e-3
    torch.testing.assert_close(hg.dw.flatten()[entries], fd, rtol=tol, atol=1e-9)
    # with λ ≡ 1 the class terms' gradient is cross-entropy's
    z = tr.model(batch.x)
    g_terms = torch.autograd.grad(ClassTerms(1 - 1e-12)(z, batch.y).sum(), z)[0]
    g_ce = torch.autograd.grad(F.cross_entropy(z, batch.y, reduction="sum"), z)[0]
    torch.testing.assert_close(g_terms, g_ce)


def test_gdw_class_level_step_spreads_weights_within_examples(monkeypatch):
    tr = trainer("gdw")
    fixed_meta(tr, monkeypatch)
    batch = batch_of(tr.train_set)
    before = [p.detach().clone() for p in tr.weight_net.parameters()]
    w, terms, ce = tr.class_level_step(batch)
    rows = torch.arange(16)
    off = w.clone()
    off[rows, batch.y] = float("nan")
    spread = torch.nanmean((off - torch.nanmean(off, 1, keepdim=True)).abs(), 1)
    assert (spread > 1e-4).float().mean() > 0.5     # classes of one example no longer share one weight
    assert any(not torch.equal(a, p) for a, p in zip(before, tr.weight_net.parameters()))
    p = torch.softmax(tr.model(batch.x), 1).clamp(0, 0.999)
    torch.testing.assert_close((w * (p - F.one_hot(batch.y, 3))).sum(1), torch.zeros(16, dtype=w.dtype))
    loss = tr.training_step(batch)
    assert loss.item() == pytest.approx(F.cross_entropy(tr.model(batch.x), batch.y).item(), rel=1e-6)


# ---- MAPLE ------------------------------------------------------------------------------------------
def test_ood_objectives_equal_their_definitions():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=g)
    env = torch.tensor([0, 1] * 6)
    per = torch.stack([F.cross_entropy(z[env == e], y[env == e]) for e in (0, 1)])
    torch.testing.assert_close(ood_objective(z, y, env, "rex"), (per - per.mean()).pow(2).mean())
    torch.testing.assert_close(ood_objective(z, y, env, "group_dro"), per.max())
    s = torch.ones((), dtype=torch.float64, requires_grad=True)
    pen = torch.stack([torch.autograd.grad(F.cross_entropy(s * z[env == e], y[env == e]), s, create_graph=True)[0]
                       for e in (0, 1)]).pow(2).mean()
    torch.testing.assert_close(ood_objective(z, y, env, "irm"), pen)
    torch.testing.assert_close(ood_objective(z, y, env, "irm", erm=0.5), pen + 0.5 * F.cross_entropy(z, y))


@pytest.mark.parametrize("objective", ["irm", "rex"])
def test_maple_weight_hypergradient_matches_the_oracle(objective):
    tr = trainer("maple", task=toy_task(groups=True), objective=objective)
    assert tr.env_kind == "groups"
    batch, outer = batch_of(tr.train_set, 16), batch_of(tr.train_set, 24, start=16)
    env = tr.environment(outer)
    fn = lambda z, y: ood_objective(z, y, env, objective)   # noqa: E731
    tr.theta.data[batch.idx] = torch.rand(16, generator=torch.Generator().manual_seed(2)).float() + 0.5
    hg = tr.lookahead.hypergradient(batch.x, batch.y, val_x=outer.x, val_y=outer.y, lr=tr.lookahead_lr(),
                                    weight_fn=lambda l: tr.example_weights(batch, l), val_loss_fn=fn)
    (g,) = hg.backward_to([tr.theta])
    t0 = tr.theta[batch.idx].detach().double()
    mean = t0.mean()   # the official normalisation: θ over its batch mean, the mean held fixed

    def oracle(t):
        return val_after_step(tr.model, batch.x, batch.y, t / mean, tr.lookahead_lr(), outer.x, outer.y, val_fn=fn)

    fd = central_difference(oracle, t0, range(16))
    assert fd.abs().max() > 1e-7
    torch.testing.assert_close(g[batch.idx].double(), fd, rtol=2e-3, atol=1e-8)   # θ is float32
    assert (g[16:] == 0).all()


def test_maple_weights_move_only_for_the_batch_and_stay_nonnegative():
    tr = trainer("maple", task=toy_task(n=96, noisy_every=4), weight_lr=0.5, epochs=3)
    batch = batch_of(tr.train_set, 16)
    tr.training_step(batch)
    moved = torch.nonzero(tr.theta.detach() != 1).flatten()
    assert set(moved.tolist()) <= set(batch.idx.tolist()) and len(moved) > 0
    tr.fit()
    theta = tr.theta.detach()
    assert (theta >= 0).all() and (theta.std() / theta.mean()).item() > 0.05
    assert tr.info["environments"] == "labels"
