"""The classifier's optimiser and learning-rate schedule (timm's factories where they apply)."""
from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The classifier's optimiser; `params` is the model (or its parameters).

    With `decay_norm_bias: false` (a model needed) timm's factory builds two groups: no weight decay on
    1-d tensors (norms, biases) and on the model's `no_weight_decay()` names (position embeddings, tokens)."""
    if not cfg.decay_norm_bias:
        if not isinstance(params, nn.Module):
            raise TypeError("decay_norm_bias=False needs the model, not its parameters")
        from timm.optim import create_optimizer_v2
        return create_optimizer_v2(params, opt="momentum" if cfg.optimizer == "sgd" else "adamw", lr=cfg.lr,
                                   weight_decay=cfg.weight_decay, momentum=cfg.momentum, filter_bias_and_bn=True,
                                   foreach=False)
    if isinstance(params, nn.Module):
        params = params.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, updates_per_epoch: int = 0):
    """The learning-rate schedule; `warmup_cosine` is timm's cosine scheduler stepped per update
    (`per_step(schedule)`), the others are torch schedulers stepped per epoch."""
    if cfg.schedule == "warmup_cosine":
        from timm.scheduler import create_scheduler_v2
        sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                                       warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, step_on_epochs=False,
                                       updates_per_epoch=max(1, updates_per_epoch))
        return sched
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_every, gamma=cfg.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def per_step(schedule) -> bool:
    """Whether `schedule` is stepped after every optimiser update (timm's per-update schedulers)."""
    return hasattr(schedule, "step_update")
