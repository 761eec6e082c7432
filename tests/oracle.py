"""The finite-difference oracle of the new baselines' tests: a real SGD step on a copy of the model with the
weighted training loss, then the outer loss — independent of `molere.lookahead` — and central differences of
it; plus a tiny double-precision task and trainer builder."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from benchmarks.models import build_model
from molere.config import TrainConfig
from molere.data import Batch, ExampleSet, TaskData
from molere.registry import METHODS
from molere.trainer import RunContext

C, D = 3, 5


def val_after_step(model, x, y, weights, lr, xv, yv, losses_fn=None, val_fn=None) -> float:
    """Outer loss after θ ← θ − lr ∇θ Σ w·ℓ / B on a copy (ℓ: per-example CE unless `losses_fn`)."""
    clone = copy.deepcopy(model)
    params = [p for p in clone.parameters() if p.requires_grad]
    z = clone(x)
    losses = losses_fn(z, y) if losses_fn is not None else F.cross_entropy(z, y, reduction="none")
    grads = torch.autograd.grad((weights * losses).sum() / len(y), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= lr * g
        zv = clone(xv)
    return float((val_fn or F.cross_entropy)(zv, yv))


def central_difference(f, t: torch.Tensor, entries, h: float = 1e-6) -> torch.Tensor:
    """(f(t + h e_k) − f(t − h e_k)) / 2h for every flat index k in `entries`."""
    out = []
    for k in entries:
        plus, minus = t.detach().clone(), t.detach().clone()
        plus.view(-1)[k] += h
        minus.view(-1)[k] -= h
        out.append((f(plus) - f(minus)) / (2 * h))
    return torch.tensor(out, dtype=torch.float64)


def toy_task(n=48, seed=0, noisy_every=0, groups=False) -> TaskData:
    g = torch.Generator().manual_seed(seed)

    def make(m, offset):
        y_true = torch.arange(m) % C
        x = torch.randn(m, D, generator=g, dtype=torch.float64) + y_true[:, None].double()
        y = y_true.clone()
        if noisy_every:
            y[::noisy_every] = (y[::noisy_every] + 1) % C
        grp = (torch.arange(m) // 2) % 2 if groups else None
        return ExampleSet(y, x=x, true_labels=y_true, ids=torch.arange(m) + offset, groups=grp)

    return TaskData("toy", train=make(n, 0), val=make(n // 2, n), test=make(n // 2, 2 * n),
                    num_classes=C, input_shape=(D,))


def factory(hidden=(6,)):
    return lambda: build_model("mlp", C, (D,), {"hidden": list(hidden)}).double()


def trainer(name, task=None, hidden=(6,), lr=0.5, batch_size=16, epochs=1, seed=0, reference=None, **hp):
    task = task or toy_task()
    torch.manual_seed(seed)
    make = factory(hidden)
    method = METHODS.get(name)
    return method(make(), task, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.0),
                  method.Hparams(**hp), RunContext(seed=seed, model_factory=make, reference=reference))


def batch_of(examples: ExampleSet, n=16, start=0) -> Batch:
    idx = torch.arange(start, start + n)
    return Batch(examples.x[idx], examples.labels[idx], idx, examples.true_labels[idx])
