"""When a trainer evaluates, and on what: `train.eval_every` (a number or `auto`), the selection split's
cadence (`train.eval_selection`) and subset-class scoring. Measured costs: docs/perf.md#evaluation-on-a-budget.
"""
from __future__ import annotations

import math

import torch

EVAL_BUDGET = 0.05     # `eval_every: auto` keeps the evaluation passes within this share of the training compute
FORWARD_COST = 1 / 3   # an evaluation forward per image, in training steps per image (forward + backward ≈ 3)


def auto_eval_every(train_images: int, eval_images: int, epochs: int, budget: float = EVAL_BUDGET) -> int:
    """The smallest epoch interval at which evaluating `eval_images` costs at most `budget` of training on
    `train_images` per epoch (1 for small evaluation splits, `epochs` = only at the end when they are large)."""
    if train_images <= 0 or eval_images <= 0:
        return 1
    return max(1, min(epochs, math.ceil(eval_images * FORWARD_COST / (budget * train_images))))


def eval_interval(eval_every: int | str, train_images: int, eval_images: int, epochs: int) -> int:
    """The resolved `train.eval_every`."""
    return auto_eval_every(train_images, eval_images, epochs) if eval_every == "auto" else int(eval_every)


def eval_epochs(eval_every: int | str, train_images: int, eval_images: int, epochs: int) -> list[int]:
    """The epochs (1-based, completed) after which a trial evaluates: every interval, and always the last."""
    every = eval_interval(eval_every, train_images, eval_images, epochs)
    return sorted({e for e in range(every, epochs + 1, every)} | {epochs})


def due_splits(splits: dict, eval_selection: str, final: bool) -> dict:
    """`splits` without the selection split when it is evaluated at the last epoch only and this is not it."""
    if eval_selection == "last" and not final:
        return {k: v for k, v in splits.items() if k != "selection"}
    return splits


def final_eval_only(cfg):
    """A TrainConfig evaluating at the last epoch only: for a helper run whose per-epoch numbers nobody reads
    (its training is unchanged: evaluation draws no random numbers)."""
    return cfg.model_copy(update={"eval_every": cfg.epochs})


def mask_to(logits: torch.Tensor, classes) -> torch.Tensor:
    """`logits` with every class outside `classes` set to -inf (argmax and softmax over the subset)."""
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[torch.as_tensor(list(classes), dtype=torch.long, device=logits.device)] = True
    return logits.masked_fill(~keep, float("-inf"))
