"""The meta machinery on timm models: the head is fed pre-logit features (pooled; timm's `forward_features`
alone is not)."""
import copy

import pytest
import torch
import torch.nn.functional as F

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


@pytest.mark.parametrize("method,hp", [("molere", {"warmup_epochs": 0, "meta_every": 1}),
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
