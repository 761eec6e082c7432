"""The meta machinery on timm models: the head is fed pre-logit features (pooled; timm's `forward_features`
alone is not)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks import catalog  # noqa: F401  (registers the methods)
from benchmarks.models import build_model
from molere.config import TrainConfig
from molere.data import ExampleSet, TaskData
from molere.lookahead import LookAhead
from molere.registry import METHODS
from molere.trainer import RunContext

SHAPE, C = (3, 32, 32), 4
ARCHS = [("timm/resnet18", {}), ("timm/vit_tiny_patch16_224", {"img_size": 32})]


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, C, (n,), generator=g)


@pytest.mark.parametrize("name,opts", ARCHS, ids=[a for a, _ in ARCHS])
def test_head_scope_meta_gradient_on_timm_matches_closed_form(name, opts):
    torch.manual_seed(0)
    model = build_model(name, C, SHAPE, opts).train()
    (x, y), (xv, yv) = data(6, 1), data(5, 2)
    lr = 0.3
    dw = LookAhead(model, scope="head").hypergradient(x, y, val_x=xv, val_y=yv, lr=lr).dw

    ref = copy.deepcopy(model)           # its BatchNorm may update: only its outputs are used
    head = ref.get_classifier()
    pre = lambda z: ref.forward_head(ref.forward_features(z), pre_logits=True).detach()  # noqa: E731
    gv = torch.autograd.grad(F.cross_entropy(head(pre(xv)), yv), list(head.parameters()))
    h = pre(x)
    per_example = []
    for i in range(len(y)):
        gi = torch.autograd.grad(F.cross_entropy(head(h[i:i + 1]), y[i:i + 1]), list(head.parameters()))
        per_example.append(sum((a * b).sum() for a, b in zip(gi, gv)))
    expected = -lr / len(y) * torch.stack(per_example)
    assert expected.abs().max() > 1e-6
    torch.testing.assert_close(dw, expected, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("method,hp", [("molere", {"meta_warmup_epochs": 0, "meta_every": 1}),
                                       ("lrw", {"meta_net": "features", "meta_every": 1})])
def test_feature_based_meta_networks_train_on_timm(method, hp):
    def split(n, offset, seed):
        x, y = data(n, seed)
        return ExampleSet(y, x=x, ids=torch.arange(n) + offset)
    task = TaskData("timm-toy", train=split(24, 0, 3), val=split(8, 24, 4), test=split(8, 32, 5),
                    num_classes=C, input_shape=SHAPE)
    torch.manual_seed(0)
    cls = METHODS.get(method)
    model = build_model("timm/resnet18", C, SHAPE)
    trainer = cls(model, task, TrainConfig(epochs=1, batch_size=8, lr=0.01), cls.Hparams(**hp), RunContext(seed=0))
    final = trainer.fit()
    assert torch.isfinite(torch.tensor(final["train/loss"]))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _vit(dtype=torch.float64):
    torch.manual_seed(0)
    return build_model("timm/vit_tiny_patch16_224", C, SHAPE, {"img_size": 32, "kwargs": {"patch_size": 8, "depth": 3}}).to(dtype)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_whole_network_lookahead_on_vit_matches_finite_differences(mode):
    """∂L_val/∂w_i of a look-ahead over every parameter of a 3-block ViT-Tiny (attention, patch embedding, head) equals a
    central difference of L_val after a real SGD step of the whole network; the backbone matters."""
    model = _vit()
    (x, y), (xv, yv) = data(4, 1), data(3, 2)
    x, xv = x.double(), xv.double()
    w = torch.rand(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lr, eps = 0.1, 1e-6
    dw = LookAhead(model, scope="all", mode=mode).hypergradient(x, y, weight_fn=lambda losses: w, val_x=xv, val_y=yv, lr=lr).dw
    params = {n: p.detach() for n, p in model.named_parameters()}

    def val_after_step(weights):
        p = {n: t.clone().requires_grad_() for n, t in params.items()}
        loss = (weights * F.cross_entropy(functional_call(model, p, (x,)), y, reduction="none")).mean()
        grads = torch.autograd.grad(loss, list(p.values()))
        stepped = {n: t.detach() - lr * g for (n, t), g in zip(p.items(), grads)}
        return F.cross_entropy(functional_call(model, stepped, (xv,)), yv).item()

    fd = torch.tensor([(val_after_step(w + eps * e) - val_after_step(w - eps * e)) / (2 * eps)
                       for e in torch.eye(4, dtype=torch.float64)])
    head_only = LookAhead(model, scope="head").hypergradient(x, y, weight_fn=lambda losses: w, val_x=xv, val_y=yv, lr=lr).dw
    assert fd.abs().max() > 1e-4
    assert ((dw - fd).norm() / fd.norm()).item() < 1e-4, (dw, fd)
    assert ((head_only - fd).norm() / fd.norm()).item() > 0.05     # the backbone's share is not negligible


def test_vit_lookahead_keeps_the_fused_attention_kernel_where_valid():
    """finite_diff needs no higher derivative: its forwards keep the fused SDPA kernel; the exact modes
    switch to the math kernel only for the forward they differentiate twice (or under jvp)."""
    model = _vit(torch.float32)
    (x, y), (xv, yv) = data(4, 1), data(3, 2)

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.fused = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.fused += "flash_attention" in str(func) or "efficient_attention" in str(func)
            return func(*args, **(kwargs or {}))

    counts = {}
    for mode in ("finite_diff", "reverse"):
        with Ops() as ops:
            LookAhead(model, mode=mode).hypergradient(x, y, weight_fn=lambda losses: torch.ones(4), val_x=xv, val_y=yv, lr=0.1)
        counts[mode] = ops.fused
    depth = len(model.blocks)
    assert counts["finite_diff"] >= 4 * depth      # training, validation and two perturbed forwards
    assert 0 < counts["reverse"] < counts["finite_diff"]   # validation forward (and its backward) only


def test_lrw_trains_a_vit_with_a_whole_network_lookahead_under_bf16():
    def split(n, offset, seed):
        x, y = data(n, seed)
        return ExampleSet(y, x=x, ids=torch.arange(n) + offset)
    task = TaskData("timm-toy", train=split(16, 0, 3), val=split(8, 16, 4), test=split(8, 24, 5),
                    num_classes=C, input_shape=SHAPE)
    cls = METHODS.get("lrw")
    t = cls(_vit(torch.float32), task, TrainConfig(epochs=1, batch_size=8, lr=0.01, precision="bf16"),
            cls.Hparams(meta_every=1), RunContext(seed=0))
    final = t.fit()
    assert torch.isfinite(torch.tensor(final["train/meta_val_loss"])) and "test/acc" in final
