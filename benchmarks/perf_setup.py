"""Trainers built for timing (`benchmarks.perf`): synthetic tasks, a fixed ERM reference, steady state."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np

# torch, the registries and the models are imported in the functions that use them: `--help` stays fast

SETTINGS = {  # name -> (model, input shape, training examples)
    "cnn-digits": ("cnn", (1, 8, 8), 1280),
    "cnn-fashion": ("cnn", (1, 28, 28), 1280),
    "mlp-digits": ("mlp", (1, 8, 8), 1280),
    "mlp-fashion": ("mlp", (1, 28, 28), 1280),
}
FD = {"hypergrad": "finite_diff"}                    # central difference
FD1 = {"hypergrad": "finite_diff", "fd_scheme": "one_sided"}
# set-up knobs every timed trainer starts past: warm-ups and burn-ins done, a one-epoch IL model (RHO-loss)
STEADY = {"meta_warmup_epochs": 0, "burn_in": 0.0, "il_epochs": 1}


def synthetic_task(shape: tuple, n: int, classes: int = 10, seed: int = 0, device: str = "cpu") -> TaskData:
    import torch

    from molere.data import ExampleSet, TaskData
    g = torch.Generator().manual_seed(seed)

    def make(m, offset):
        y = torch.arange(m) % classes
        return ExampleSet(y, x=torch.rand(m, *shape, generator=g).to(device), ids=torch.arange(m) + offset)
    return TaskData("perf", train=make(n, 0), val=make(n // 5, n), test=make(256, 2 * n),
                    num_classes=classes, input_shape=shape)


class FixedReference:
    """Stands in for a stored ERM run: fixed random margins, so no ERM pass is timed or trained."""

    def __init__(self, task: TaskData):
        import torch
        ids = torch.cat([task.train.ids, task.val.ids]).numpy()
        self.margins = (ids, np.random.default_rng(0).uniform(-1, 1, len(ids)))

    def pool_margins(self):
        from molere.reference import ReferenceMargins
        return ReferenceMargins(*self.margins)

    def oof_margins(self, folds: int):
        from molere.reference import ReferenceMargins
        return ReferenceMargins(*self.margins)

    def test_outputs(self):
        return None


def build(method: str, hparams: dict, setting: str, batch_size: int, epochs: int = 1000, device: str = "cpu",
          precision: str = "fp32", task: TaskData | None = None, factory=None):
    """A trainer on a synthetic task of the setting's shape (or the given task and model factory);
    MOLERE starts past its warm-up."""
    import torch

    from molere.config import TrainConfig
    from molere.registry import METHODS
    from molere.trainer import RunContext

    from . import catalog  # noqa: F401  (registers the methods)
    from .models import model_factory
    if task is None:
        arch, shape, n = SETTINGS[setting]
        task = synthetic_task(shape, n, device=device)
        factory = model_factory(arch, task.num_classes, shape, {})
    torch.manual_seed(0)
    cls = METHODS.get(method)
    hparams = {**STEADY, **hparams}
    hp = cls.Hparams.model_validate({k: v for k, v in hparams.items() if k in cls.Hparams.model_fields})
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.05, schedule="constant", device=device,
                      precision=precision)
    context = RunContext(seed=0, device=device, model_factory=factory, reference=FixedReference(task))
    with torch.device(device) if device.startswith("cuda") else nullcontext():   # initialise on the GPU
        model = factory()
    trainer = cls(model, task, cfg, hp, context)
    trainer.on_epoch_start(0)   # steady state before any step is timed (e.g. FSR's probe set, MOLERE's split)
    return trainer


def stream(trainer):
    while True:
        yield from trainer.train_set.batches(trainer.cfg.batch_size, shuffle=True, generator=trainer.generator,
                                             drop_last=True)


def sync(trainer) -> None:
    if trainer.device.type == "cuda":
        import torch
        torch.cuda.synchronize(trainer.device)


