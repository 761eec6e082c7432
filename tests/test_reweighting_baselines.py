"""MWN, L2RW and FSR: meta-set sources, method-level meta-gradients, weights, probe set, known behaviour."""
from __future__ import annotations

import tempfile

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from baselines.fsr import best_per_class
from baselines.l2rw import batch_weights
from benchmarks.trial.config import TrialConfig
from benchmarks.models import build_model
from benchmarks.trial.execute import run_trial
from molere.config import ConfigError, TrainConfig
from molere.data import Batch, ExampleSet, TaskData
from molere.lookahead import head_parameter_names
from molere.registry import METHODS
from molere.reweighting import clamped_normalised
from molere.trainer import RunContext
from tests.optional_data import needs_fashion_mnist

C, D = 3, 5
NOISY_DATASETS = {"digits": {}, "mnist1d": {"num_samples": 2000}, "fashion_mnist": {"train_subset": 2000}}


def toy_task(n=48, seed=0, val=True, noisy_every=0) -> TaskData:
    g = torch.Generator().manual_seed(seed)

    def make(m, offset):
        y_true = torch.arange(m) % C
        x = torch.randn(m, D, generator=g, dtype=torch.float64) + y_true[:, None].double()
        y = y_true.clone()
        if noisy_every:
            y[::noisy_every] = (y[::noisy_every] + 1) % C
        return ExampleSet(y, x=x, true_labels=y_true, ids=torch.arange(m) + offset)

    return TaskData("toy", train=make(n, 0), val=make(n // 2, n) if val else None, test=make(n // 2, 2 * n),
                    num_classes=C, input_shape=(D,))


def trainer(name, task=None, hidden=(6,), lr=0.5, batch_size=16, epochs=1, seed=0, **hp):
    task = task or toy_task()
    torch.manual_seed(seed)
    model = build_model("mlp", C, (D,), {"hidden": list(hidden)}).double()
    method = METHODS.get(name)
    return method(model, task, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.0),
                  method.Hparams(**hp), RunContext(seed=seed))


def batch_of(examples: ExampleSet, n=16) -> Batch:
    idx = torch.arange(n)
    return Batch(examples.x[idx], examples.labels[idx], idx, examples.true_labels[idx])


def fixed_meta_batch(tr, monkeypatch, n=12):
    xv, yv = tr.data.test.x[:n], tr.data.test.labels[:n]
    monkeypatch.setattr(tr, "next_meta_batch", lambda: (xv, yv))
    return xv, yv


def per_example_grads(model, x, y, names=None) -> torch.Tensor:
    """Rows ∇θ ℓ_i(θ), flattened, computed one example at a time."""
    params = [p for n, p in model.named_parameters() if names is None or n in names]
    rows = []
    for i in range(len(y)):
        g = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)
        rows.append(torch.cat([t.flatten() for t in g]))
    return torch.stack(rows)


# ---- the shared meta-set source ------------------------------------------------------------------
def test_meta_source_val_needs_a_validation_split():
    with pytest.raises(ConfigError, match="meta_source"):
        trainer("mwn", task=toy_task(val=False))
    with pytest.raises(ConfigError, match="meta_source"):
        trainer("l2rw", task=toy_task(val=False))
    tr = trainer("l2rw")
    assert tr.meta_set is tr.data.val and tr.train_set is tr.data.train


@pytest.mark.parametrize("name", ["mwn", "l2rw"])
def test_meta_source_train_per_class_holds_out_balanced_seeded(name):
    task = toy_task(noisy_every=4)
    tr = trainer(name, task=task, meta_source="train_per_class", meta_per_class=3)
    meta_ids, train_ids = set(tr.meta_set.ids.tolist()), set(tr.train_set.ids.tolist())
    assert torch.bincount(tr.meta_set.labels, minlength=C).tolist() == [3] * C   # by observed label
    assert not meta_ids & train_ids and meta_ids | train_ids == set(task.train.ids.tolist())
    assert tr.info["meta_size"] == 9 and tr.info["train_size"] == len(task.train) - 9
    again = trainer(name, task=task, meta_source="train_per_class", meta_per_class=3)
    other = trainer(name, task=task, meta_source="train_per_class", meta_per_class=3, seed=1)
    assert again.meta_set.ids.tolist() == tr.meta_set.ids.tolist()
    assert other.meta_set.ids.tolist() != tr.meta_set.ids.tolist()


# ---- MWN --------------------------------------------------------------------------------------------
def test_mwn_meta_step_updates_weight_net_and_leaves_classifier_grads(monkeypatch):
    tr = trainer("mwn")
    fixed_meta_batch(tr, monkeypatch)
    sentinel = {n: torch.full_like(p, 7.0) for n, p in tr.model.named_parameters()}
    for n, p in tr.model.named_parameters():
        p.grad = sentinel[n].clone()
    theta = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    phi = [p.detach().clone() for p in tr.weight_net.parameters()]
    losses = tr.meta_step(batch_of(tr.train_set)).losses
    assert any(not torch.equal(a, p) for a, p in zip(phi, tr.weight_net.parameters()))
    for n, p in tr.model.named_parameters():
        assert torch.equal(p.grad, sentinel[n]) and torch.equal(p, theta[n])
    assert losses.grad_fn is not None and losses.shape == (16,)


@pytest.mark.parametrize("normalize,hypergrad", [(False, "reverse"), (True, "reverse"), (False, "finite_diff")])
def test_mwn_weight_net_gradient_matches_finite_differences(monkeypatch, normalize, hypergrad):
    tr = trainer("mwn", normalize=normalize, hypergrad=hypergrad)
    tr.weight_net.double()
    xv, yv = fixed_meta_batch(tr, monkeypatch)
    grads = {}
    monkeypatch.setattr(tr.meta_opt, "step", lambda: grads.update(
        {n: p.grad.clone() for n, p in tr.weight_net.named_parameters()}))
    batch = batch_of(tr.train_set)
    tr.meta_step(batch)
    lr = tr.lookahead_lr()

    def lookahead_val_loss(phi: dict) -> float:   # independent: θ̂ = θ − lr ∇θ mean_i V(ℓ_i) ℓ_i
        params = dict(tr.model.named_parameters())
        losses = F.cross_entropy(functional_call(tr.model, params, (batch.x,)), batch.y, reduction="none")
        w = functional_call(tr.weight_net, phi, (losses.detach(),))
        objective = (w * losses).sum() / w.sum() if normalize else (w * losses).mean()
        g = torch.autograd.grad(objective, list(params.values()))
        fast = {n: p - lr * gi for (n, p), gi in zip(params.items(), g)}
        return F.cross_entropy(functional_call(tr.model, fast, (xv,)), yv).item()

    name = "net.0.weight"
    k = grads[name].abs().argmax()
    phi = {n: p.detach().clone() for n, p in tr.weight_net.named_parameters()}
    h = 1e-5
    plus, minus = {**phi, name: phi[name].clone()}, {**phi, name: phi[name].clone()}
    plus[name].view(-1)[k] += h
    minus[name].view(-1)[k] -= h
    fd = (lookahead_val_loss(plus) - lookahead_val_loss(minus)) / (2 * h)
    exact = grads[name].view(-1)[k].item()
    assert abs(exact) > 1e-8
    assert abs(exact - fd) / abs(fd) < 1e-3


# ---- L2RW -------------------------------------------------------------------------------------------
def test_l2rw_weights_equal_clamped_normalised_closed_form(monkeypatch):
    tr = trainer("l2rw", hidden=(), weight_norm="sum")   # a linear model, the paper's weights
    xv, yv = fixed_meta_batch(tr, monkeypatch)
    batch = batch_of(tr.train_set)
    hg = tr.lookahead.hypergradient(batch.x, batch.y, val_x=xv, val_y=yv, lr=tr.lookahead_lr())
    assert hg.dw.abs().max() > 1e-6            # ∂L_val/∂ε is not zero at ε = 0
    w, losses = tr.meta_weights(batch)
    gi = per_example_grads(tr.model, batch.x, batch.y)
    gv = torch.cat([t.flatten() for t in torch.autograd.grad(F.cross_entropy(tr.model(xv), yv),
                                                            list(tr.model.parameters()))])
    raw = (tr.lookahead_lr() * gi @ gv).clamp_min(0)
    expected = raw / raw.sum()
    assert (expected == 0).any() and (expected > 0).any()   # the clamp matters in this case
    torch.testing.assert_close(w, expected, rtol=1e-8, atol=1e-12)
    assert (w >= 0).all() and torch.isclose(w.sum(), torch.tensor(1.0, dtype=w.dtype))
    loss = tr.training_step(batch)
    ref = (expected * F.cross_entropy(tr.model(batch.x), batch.y, reduction="none")).sum()
    torch.testing.assert_close(loss, ref)


def test_l2rw_all_zero_weights_give_no_gradient_and_are_counted(monkeypatch):
    # zero linear model, identical inputs: ⟨∇ℓ_val, ∇ℓ_i⟩ ∝ δ(y_val, y_i) − 1/3, negative when labels differ
    x = torch.ones(6, D, dtype=torch.float64)
    task = TaskData("same", train=ExampleSet(torch.zeros(6, dtype=torch.long), x=x), test=ExampleSet(
        torch.zeros(6, dtype=torch.long), x=x), val=ExampleSet(torch.zeros(6, dtype=torch.long), x=x),
        num_classes=C, input_shape=(D,))
    for y_val, zero in ((1, True), (0, False)):
        tr = trainer("l2rw", task=task, hidden=())
        with torch.no_grad():
            for p in tr.model.parameters():
                p.zero_()
        monkeypatch.setattr(tr, "next_meta_batch", lambda y=y_val: (x[:3], torch.full((3,), y)))
        loss = tr.training_step(batch_of(task.train, 6))
        assert tr._step_logs["zero_weight_batch"] == [float(zero)]
        assert (loss.item() == 0.0) == zero
    assert clamped_normalised(torch.tensor([0.5, 0.0])).tolist() == [0.0, 0.0]
    assert clamped_normalised(torch.tensor([-1.0, 0.2, -3.0])).tolist() == [0.25, 0.0, 0.75]


@pytest.mark.parametrize("dw,rule,expected", [
    ([-1.0, -1.0, 0.5, 0.0], "sum", [0.5, 0.5, 0.0, 0.0]),
    ([-1.0, -1.0, 0.5, 0.0], "ess", [0.25, 0.25, 0.0, 0.0]),    # two of four kept: each keeps ERM's 1/B
    ([-3.0, -1.0, 0.5, 0.0], "ess", [0.3, 0.1, 0.0, 0.0]),      # ESS 1.6 of 4: Σw = 0.4, proportions kept
    ([0.5, 0.2, 0.0, 0.1], "ess", [0.0, 0.0, 0.0, 0.0]),        # all zero stays zero
    ([-1.0, 0.0, 1.0, 0.0], "shift", [2.25 / 5, 1.25 / 5, 0.25 / 5, 1.25 / 5])])   # floor 1/B on the shifted
def test_l2rw_weight_rules(dw, rule, expected):
    w = batch_weights(torch.tensor(dw, dtype=torch.float64), rule)
    torch.testing.assert_close(w, torch.tensor(expected, dtype=torch.float64))


def test_l2rw_default_weights_are_the_papers_times_their_ess(monkeypatch):
    tr = trainer("l2rw", hidden=())
    xv, yv = fixed_meta_batch(tr, monkeypatch)
    batch = batch_of(tr.train_set)
    paper = clamped_normalised(tr.lookahead.hypergradient(batch.x, batch.y, val_x=xv, val_y=yv,
                                                          lr=tr.lookahead_lr()).dw)
    w, _ = tr.meta_weights(batch)
    ess = paper.sum() ** 2 / (len(paper) * paper.pow(2).sum())
    assert 0 < ess < 1 and tr.hp.weight_norm == "ess"
    torch.testing.assert_close(w, paper * ess)


# ---- FSR --------------------------------------------------------------------------------------------
def test_best_per_class_takes_lowest_scores_unscored_last():
    scores = torch.tensor([0.5, -1.0, 0.2, 0.0, 9.0, 3.0, -2.0])
    scored = torch.tensor([True, True, True, False, True, True, True])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    g = torch.Generator().manual_seed(0)
    assert best_per_class(scores, scored, labels, 2, 3, g).tolist() == [1, 2, 4, 5, 6]   # class 2 has only one
    scored[:] = False
    pick = best_per_class(scores, scored, labels, 2, 3, g)
    assert torch.bincount(labels[pick], minlength=3).tolist() == [2, 2, 1]


def test_fsr_probe_set_is_class_balanced_training_examples():
    task = toy_task(n=60, noisy_every=4)
    tr = trainer("fsr", task=task, epochs=3, batch_size=10, meta_warmup_epochs=1, probe_per_class=4)
    assert tr.meta_set is None and tr.train_set is task.train   # nothing held out
    metrics = tr.fit()
    probe = tr.meta_set
    assert torch.bincount(probe.labels, minlength=C).tolist() == [4] * C
    assert set(probe.ids.tolist()) <= set(task.train.ids.tolist())
    assert not set(probe.ids.tolist()) & set(task.val.ids.tolist())
    assert tr.scored.all()   # every training example has a score after its first full epoch
    assert metrics["train/probe_purity"] == pytest.approx((probe.labels == probe.true_labels).float().mean().item())


def test_fsr_looks_ahead_on_the_head_only():
    tr = trainer("fsr", hidden=(6,))
    head, all_names = head_parameter_names(tr.model), [n for n, _ in tr.model.named_parameters()]
    assert tr.lookahead.names == head and set(head) == {"head.weight", "head.bias"}
    assert not set(tr.lookahead.names) & (set(all_names) - set(head))
    batch, xv, yv = batch_of(tr.train_set), tr.data.test.x[:12], tr.data.test.labels[:12]
    lr = tr.lookahead_lr()
    dw = tr.lookahead.hypergradient(batch.x, batch.y, val_x=xv, val_y=yv, lr=lr).dw

    def closed_form(names):
        gv = torch.autograd.grad(F.cross_entropy(tr.model(xv), yv),
                                 [p for n, p in tr.model.named_parameters() if n in names])
        return -lr * per_example_grads(tr.model, batch.x, batch.y, names) @ torch.cat([t.flatten() for t in gv])

    torch.testing.assert_close(dw, closed_form(head))
    assert not torch.allclose(dw, closed_form(all_names))   # the backbone really is left out


def noisy_trial(method, dataset, seed, train, **hp):
    """Test metrics of one trial with 40% symmetric noise, the default `mlp`, `dataset` as in NOISY_DATASETS."""
    cfg = TrialConfig(dataset={"name": dataset, "options": NOISY_DATASETS[dataset]},
                      regime={"kind": "symmetric", "rate": 0.4}, model={"name": "mlp"},
                      method={"name": method, "hparams": hp}, train=train, seed=seed)
    with tempfile.TemporaryDirectory() as d:
        return run_trial(cfg, d)["metrics"]


def digits_trial(method, seed, train, **hp):
    return noisy_trial(method, "digits", seed, train, **hp)


def test_fsr_probe_set_is_cleaner_than_the_noisy_training_set(capsys):
    train = dict(epochs=5, batch_size=100, eval_every=5)
    purity = [round(digits_trial("fsr", s, train)["train/probe_purity"], 3) for s in range(3)]
    with capsys.disabled():
        print(f"\nFSR probe purity after 5 epochs, digits 40% symmetric noise (chance 0.6): {purity}")
    assert sum(purity) / 3 > 0.6


# ---- known behaviour: meta-reweighting against memorising ERM ---------------------------------------
# ERM must memorise the noise: lr 0.1 (momentum 0.9) on a cosine schedule, no weight decay, 100 epochs,
# batch 100 (the papers' batch size). The methods keep their defaults; the meta set is 10 true-labelled
# examples per class held out of the training set. The same protocol and data as sweeps/fidelity.yaml, whose
# report (docs/results/fidelity.md) gives the CIs; measured numbers: docs/results/mwn_noisy_digits.md.
MEMORISE = dict(epochs=100, batch_size=100, lr=0.1, momentum=0.9, weight_decay=0.0, schedule="cosine",
                eval_every=100)
META = dict(meta_source="train_per_class", meta_labels="true", meta_per_class=10)
SEEDS = (0, 1, 2)


def not_reproduced(measured: str):
    return pytest.mark.xfail(strict=True, reason=f"not reproduced at this scale (issue 25, measured: {measured}); "
                                                 "the test flags the day it starts to pass")


# Measured by sweeps/fidelity.yaml (3 seeds, the same configs; docs/results/fidelity.md has the CIs).
CASES = [pytest.param("mwn", {}, "digits", id="mwn-digits"),   # default: Σ V ℓ / Σ V (normalize: true)
         pytest.param("l2rw", {}, "digits", id="l2rw-digits"),   # default: weight_norm ess
         pytest.param("mwn", {}, "mnist1d", id="mwn-mnist1d", marks=not_reproduced("0.269 vs ERM 0.322")),
         pytest.param("l2rw", {}, "mnist1d", id="l2rw-mnist1d", marks=not_reproduced("0.323 vs ERM 0.322")),
         pytest.param("mwn", {}, "fashion_mnist", id="mwn-fashion_mnist",
                      marks=[needs_fashion_mnist, not_reproduced("0.567 vs ERM 0.564")]),
         pytest.param("l2rw", {}, "fashion_mnist", id="l2rw-fashion_mnist", marks=needs_fashion_mnist),
         pytest.param("mwn", {"normalize": False}, "digits", id="mwn-paper-eq-digits", marks=pytest.mark.xfail(
             strict=True, reason=(
                 "known shortfall with the paper's Eq. (mean of V·ℓ): within the first epochs the weight net raises "
                 "every weight (a larger effective step helps early), V saturates near 1 at high losses where the "
                 "sigmoid gradient vanishes, and MWN memorises like ERM (measured: mean test acc 0.701 vs ERM "
                 "0.707)")))]


@pytest.fixture(scope="module")
def one_thread():
    """These tiny models train several times faster on one intra-op thread (no spin-waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def erm_cache(one_thread):
    return {}


@pytest.fixture
def erm_runs(erm_cache, dataset):
    """ERM's three seeds on `dataset`, trained once per module."""
    if dataset not in erm_cache:
        erm_cache[dataset] = [noisy_trial("erm", dataset, s, MEMORISE) for s in SEEDS]
    return erm_cache[dataset]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])   # Fashion-MNIST's ERM fits 0.944-0.967 of them
def test_erm_memorises_the_noisy_labels(dataset, erm_runs):
    assert all(m["train/acc_observed"] >= 0.95 for m in erm_runs), [m["train/acc_observed"] for m in erm_runs]


@pytest.mark.slow
@pytest.mark.parametrize("method,hp,dataset", CASES)
def test_meta_reweighting_beats_memorising_erm(method, hp, dataset, erm_runs, capsys):
    runs = [noisy_trial(method, dataset, s, MEMORISE, **META, **hp) for s in SEEDS]
    erm = sum(m["test/acc"] for m in erm_runs) / len(SEEDS)
    ours = sum(m["test/acc"] for m in runs) / len(SEEDS)
    with capsys.disabled():
        print(f"\n{dataset} {method} {hp}: test acc {[round(m['test/acc'], 3) for m in runs]} mean {ours:.3f}; "
              f"ERM {[round(m['test/acc'], 3) for m in erm_runs]} mean {erm:.3f} "
              f"(ERM train acc on noisy labels {[round(m['train/acc_observed'], 3) for m in erm_runs]})")
    assert ours >= erm + 0.03
