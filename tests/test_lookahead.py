"""The look-ahead engine: exact meta-gradients (finite differences) and an untouched real model."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from molere.lookahead import LookAhead


class TinyNet(nn.Module):
    """Linear -> BatchNorm -> tanh (-> dropout) -> linear head, in double precision."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        layers = [nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh()] + ([nn.Dropout(dropout)] if dropout else [])
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(8, 3)

    def forward_features(self, x):
        return self.body(x)

    def forward_head(self, h, pre_logits=False):
        return h if pre_logits else self.fc(h)

    def forward(self, x):
        return self.fc(self.body(x))

    def get_classifier(self):
        return self.fc


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    xv = torch.randn(4, 5, generator=g, dtype=torch.float64)
    yv = torch.randint(0, 3, (4,), generator=g)
    w = torch.rand(6, generator=g, dtype=torch.float64)
    return x, y, xv, yv, w


def _val_loss_after_step(model, names, x, y, xv, yv, w, lr):
    """Reference: a real SGD step on a copy with weights w, then the validation loss (train-mode BN)."""
    clone = TinyNet().double()
    clone.load_state_dict(model.state_dict())
    params = dict(clone.named_parameters())
    loss = (w * F.cross_entropy(clone(x), y, reduction="none")).mean()
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    with torch.no_grad():
        for n, g in zip(names, grads):
            params[n] -= lr * g
    return F.cross_entropy(clone(xv), yv).item()


@pytest.mark.parametrize("mode", ["reverse", "forward"])
@pytest.mark.parametrize("scope", ["all", "head"])
def test_meta_gradient_matches_central_finite_differences(scope, mode):
    torch.manual_seed(0)
    model = TinyNet().double()
    x, y, xv, yv, w = _data()
    lr, eps = 0.5, 1e-6
    la = LookAhead(model, scope=scope, mode=mode)
    hg = la.hypergradient(x, y, weight_fn=lambda losses: w, val_x=xv, val_y=yv, lr=lr)
    fd = torch.zeros_like(w)
    for i in range(len(w)):
        wp, wm = w.clone(), w.clone()
        wp[i] += eps
        wm[i] -= eps
        fd[i] = (_val_loss_after_step(model, la.names, x, y, xv, yv, wp, lr)
                 - _val_loss_after_step(model, la.names, x, y, xv, yv, wm, lr)) / (2 * eps)
    rel = (hg.dw - fd).norm() / fd.norm()
    assert fd.abs().max() > 1e-4          # the check is not vacuous
    assert rel < 1e-3, (hg.dw, fd)


def test_head_scope_selects_only_the_head():
    model = TinyNet().double()
    assert LookAhead(model, scope="head").names == ["fc.weight", "fc.bias"]
    assert len(LookAhead(model, scope="all").names) == 6


def test_weighting_function_gradient_chains_through_weights():
    """∂L_val/∂φ from backward_to equals finite differences through a parametrised weighting."""
    torch.manual_seed(1)
    model = TinyNet().double()
    x, y, xv, yv, _ = _data(1)
    phi = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    la = LookAhead(model)

    def weights(losses, p=phi):
        return torch.sigmoid(p[0] * losses + p[1])

    hg = la.hypergradient(x, y, weight_fn=lambda out: weights(out.losses), val_x=xv, val_y=yv, lr=0.5)
    (g,) = hg.backward_to([phi])
    eps = 1e-6
    for k in range(2):
        losses = F.cross_entropy(model(x), y, reduction="none").detach()
        d = torch.zeros(2, dtype=torch.float64)
        d[k] = eps
        lp = _val_loss_after_step(model, la.names, x, y, xv, yv, weights(losses, phi.detach() + d), 0.5)
        lm = _val_loss_after_step(model, la.names, x, y, xv, yv, weights(losses, phi.detach() - d), 0.5)
        assert abs(g[k].item() - (lp - lm) / (2 * eps)) < 1e-6 + 1e-3 * abs(g[k].item())


@pytest.mark.parametrize("mode", ["reverse", "forward", "finite_diff"])
@pytest.mark.parametrize("scope", ["all", "head"])
def test_real_model_untouched(scope, mode):
    torch.manual_seed(0)
    model = TinyNet().double()
    x, y, xv, yv, w = _data()
    model(x).sum().backward()    # give the real model some .grad to protect
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hg = LookAhead(model, scope=scope, mode=mode).hypergradient(x, y, weight_fn=lambda losses: w, val_x=xv, val_y=yv,
                                                                lr=0.5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())   # params + BN stats
    assert all(torch.equal(grads[n], p.grad) for n, p in model.named_parameters())
    hg.commit_buffers()          # the real step's forward statistics, exactly as an ERM forward
    reference = TinyNet().double()
    reference.load_state_dict(state)
    reference(x)
    for k, v in reference.state_dict().items():
        assert torch.allclose(v, model.state_dict()[k]), k


def test_train_losses_reuse_the_real_forward():
    torch.manual_seed(0)
    model = TinyNet().double()
    x, y, xv, yv, w = _data()
    hg = LookAhead(model).hypergradient(x, y, weight_fn=lambda losses: w, val_x=xv, val_y=yv, lr=0.5)
    expected = F.cross_entropy(TinyNet.forward(model, x), y, reduction="none")
    assert torch.allclose(hg.train_losses, expected)
    (hg.train_losses.mean()).backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0


def test_l2rw_zero_weights_lookahead_has_nonzero_epsilon_gradient():
    model = TinyNet().double()
    x, y, xv, yv, _ = _data()
    hg = LookAhead(model, reduction="sum").hypergradient(x, y, val_x=xv, val_y=yv, lr=0.5)
    assert hg.dw.abs().max() > 0


@pytest.mark.parametrize("scope", ["all", "head"])
def test_forward_and_reverse_modes_agree(scope):
    torch.manual_seed(2)
    model = TinyNet().double()
    x, y, xv, yv, w = _data(2)
    a, b = (LookAhead(model, scope=scope, mode=mode).hypergradient(x, y, weight_fn=lambda losses: w, val_x=xv,
                                                                   val_y=yv, lr=0.3) for mode in ("reverse", "forward"))
    assert torch.allclose(a.dw, b.dw, rtol=1e-8, atol=1e-12)
    assert torch.allclose(a.val_loss, b.val_loss)


@pytest.mark.parametrize("scope", ["all", "head"])
@pytest.mark.parametrize("weighted", [True, False])   # False: L2RW's ε = 0 look-ahead
@pytest.mark.parametrize("scheme,order", [("central", 2), ("one_sided", 1)])
def test_finite_difference_mode_converges_to_the_exact_meta_gradient(scope, weighted, scheme, order):
    torch.manual_seed(3)
    model = TinyNet().double()
    x, y, xv, yv, w = _data(3)
    fn = (lambda losses: w) if weighted else None
    exact = LookAhead(model, scope=scope).hypergradient(x, y, weight_fn=fn, val_x=xv, val_y=yv, lr=0.4).dw

    def error(fd_eps):
        la = LookAhead(model, scope=scope, mode="finite_diff", fd_eps=fd_eps, fd_scheme=scheme)
        dw = la.hypergradient(x, y, weight_fn=fn, val_x=xv, val_y=yv, lr=0.4).dw
        return ((dw - exact).norm() / exact.norm()).item()

    coarse, fine = error(1e-1), error(1e-2)
    assert exact.abs().max() > 1e-4
    assert coarse < 10 ** -order and fine < 10 ** (-2 * order)
    # the error falls as ε^order: 10× smaller ε, 10^order× smaller error (within a factor 3)
    assert fine < coarse / (10 ** order / 3)


@pytest.mark.parametrize("mode,fd", [("forward", {}), ("finite_diff", {"fd_eps": 1e-4})])
def test_first_order_modes_replay_the_training_forwards_dropout_masks(mode, fd):
    torch.manual_seed(0)
    model = TinyNet(dropout=0.3).double().train()
    x, y, xv, yv, w = _data(4)

    def dw(**kw):
        torch.manual_seed(5)     # the same masks for the training and validation forwards of each run
        return LookAhead(model, **kw).hypergradient(x, y, weight_fn=lambda losses: w, val_x=xv, val_y=yv, lr=0.5).dw

    exact, approx = dw(), dw(mode=mode, **fd)
    assert ((approx - exact).norm() / exact.norm()).item() < 1e-5
