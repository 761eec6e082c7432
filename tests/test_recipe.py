"""The fine-tuning recipe: warmup then per-step cosine (timm), label smoothing, no weight decay on norms /
biases / embeddings (timm's optimizer factory); the existing options keep their behaviour."""
import math

import pytest
import torch
import torch.nn.functional as F

from benchmarks import catalog  # noqa: F401  (registers the methods)
from benchmarks.models import build_model
from molere.config import ConfigError, TrainConfig, validate
from molere.data import ExampleSet, TaskData
from molere.lookahead import LookAhead
from molere.registry import METHODS
from molere.trainer import Trainer, make_optimizer


def task(n=40, d=5, c=3, seed=0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    mk = lambda m: ExampleSet(torch.randint(0, c, (m,), generator=g), x=torch.randn(m, d, generator=g))  # noqa: E731
    return TaskData("toy", mk(n), mk(12), c, (d,), val=mk(12))


def mlp():
    return build_model("mlp", 3, (5,), {"hidden": [8]})


def test_warmup_cosine_is_stepped_per_update_with_timm_formula():
    cfg = TrainConfig(epochs=4, batch_size=10, lr=0.2, schedule="warmup_cosine", warmup_epochs=1.5,
                      warmup_lr=0.01, min_lr=0.002, weight_decay=0)
    torch.manual_seed(0)
    tr = Trainer(mlp(), task(), cfg)
    seen = []
    step = tr.train_step
    tr.train_step = lambda b: (seen.append(tr.lr), step(b))[1]     # lr used by every real update
    tr.fit()
    per_epoch, total, warm = 4, 16, 6                                # 40 examples / batch 10; 1.5 epochs warmup
    expect = []
    for t in range(total):
        if t < warm:
            expect.append(0.01 + t * (0.2 - 0.01) / warm)
        else:
            expect.append(0.002 + 0.5 * (0.2 - 0.002) * (1 + math.cos(math.pi * t / total)))
    assert seen == pytest.approx(expect, rel=1e-6)
    assert len(set(round(v, 9) for v in seen[:per_epoch])) == per_epoch   # changes within an epoch


def test_default_schedules_are_unchanged_per_epoch_torch_schedulers():
    torch.manual_seed(0)
    tr = Trainer(mlp(), task(), TrainConfig(epochs=3, batch_size=10, lr=0.1))
    assert type(tr.optimizer) is torch.optim.SGD and len(tr.optimizer.param_groups) == 1
    assert isinstance(tr.schedule, torch.optim.lr_scheduler.CosineAnnealingLR)
    lrs = [tr.train_epoch()["lr"] for _ in range(3)]
    assert lrs == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in (1, 2, 3)])


def test_warmup_needs_the_warmup_schedule():
    with pytest.raises(ConfigError, match="warmup_epochs needs schedule: warmup_cosine"):
        validate(TrainConfig, {"warmup_epochs": 1}, prefix="train")
    with pytest.raises(ConfigError, match="warmup_epochs must be below epochs"):
        validate(TrainConfig, {"schedule": "warmup_cosine", "warmup_epochs": 5, "epochs": 5})


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_no_weight_decay_on_norms_biases_and_embeddings(optimizer):
    torch.manual_seed(0)
    model = build_model("timm/vit_tiny_patch16_224", 3, (3, 32, 32), {"img_size": 32})
    cfg = TrainConfig(optimizer=optimizer, lr=0.1, weight_decay=0.5, decay_norm_bias=False)
    opt = make_optimizer(model, cfg)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(decay_of) == len(names)
    for n in ("pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "head.bias"):
        assert decay_of[id(names[n])] == 0.0, n
    for n in ("blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "head.weight"):
        assert decay_of[id(names[n])] == 0.5, n
    # one step with zero loss gradient: only the decayed tensors shrink
    before = {n: p.detach().clone() for n, p in names.items()}
    for p in names.values():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(names["pos_embed"], before["pos_embed"])
    assert torch.equal(names["blocks.0.norm1.weight"], before["blocks.0.norm1.weight"])
    assert torch.allclose(names["head.weight"], before["head.weight"] * (1 - 0.1 * 0.5))
    # the default decays everything in one group
    default = make_optimizer(model, TrainConfig(optimizer=optimizer, weight_decay=0.5))
    assert len(default.param_groups) == 1 and default.param_groups[0]["weight_decay"] == 0.5


def smoothed(logits, y, eps):
    logp = F.log_softmax(logits, 1)
    return -(1 - eps) * logp.gather(1, y[:, None]).squeeze(1) - eps * logp.mean(1)


def test_label_smoothing_in_the_real_step_of_erm():
    torch.manual_seed(0)
    tr = Trainer(mlp(), task(), TrainConfig(label_smoothing=0.2, batch_size=8))
    b = next(tr.train_set.batches(8))
    got = tr.training_step(b)
    ref = smoothed(tr.model(b.x), b.y, 0.2).mean()
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    assert got.item() != pytest.approx(F.cross_entropy(tr.model(b.x), b.y).item(), rel=1e-3)


@pytest.mark.parametrize("method", ["lrw", "mwn", "l2rw", "fsr"])
def test_meta_methods_train_on_the_smoothed_loss(method):
    torch.manual_seed(0)
    cls = METHODS.get(method)
    cfg = TrainConfig(label_smoothing=0.3, batch_size=8, lr=0.05)
    tr = cls(mlp(), task(), cfg, cls.Hparams())
    assert getattr(tr, "lookahead", None) is None or tr.lookahead.label_smoothing == 0.3
    b = next(tr.train_set.batches(8))
    seen = {}
    orig = F.cross_entropy

    def spy(*a, **k):
        if k.get("reduction") == "none":
            seen.setdefault("ls", set()).add(k.get("label_smoothing", 0.0))
        return orig(*a, **k)
    with pytest.MonkeyPatch.context() as mp:
        for mod in ("molere.trainer", "molere.lookahead"):
            mp.setattr(f"{mod}.F.cross_entropy", spy)
        tr.global_step = 1          # not a meta step: the plain weighted step
        tr.training_step(b)
    assert seen.get("ls") == {0.3}


def test_lookahead_training_losses_are_smoothed_validation_loss_is_not():
    torch.manual_seed(0)
    model = mlp()
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    xv, yv = torch.randn(4, 5), torch.randint(0, 3, (4,))
    hg = LookAhead(model, label_smoothing=0.25).hypergradient(x, y, val_x=xv, val_y=yv, lr=0.1)
    assert torch.allclose(hg.train_losses, smoothed(model(x), y, 0.25), atol=1e-6)
    assert hg.val_loss.item() == pytest.approx(F.cross_entropy(model(xv), yv).item(), rel=1e-5)
