"""When a trainer evaluates, and on what: `train.eval_every` (a number or `auto`), the selection split's
cadence (`train.eval_selection`) and subset-class scoring; the evaluation pass itself (`Outputs`, metrics).
Measured costs: docs/perf.md#evaluation-on-a-budget.
"""
from __future__ import annotations

import math
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .forward import BatchOutputs, head_inputs
from .margins import probabilistic_margin

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


@dataclass
class Outputs:
    """Per-example evaluation outputs of one split."""
    ids: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    margins: np.ndarray
    groups: np.ndarray | None = None
    observed_margins: np.ndarray | None = None   # against the observed labels (= margins when asked for those)
    statistics: dict[str, np.ndarray] = field(default_factory=dict)   # the method's `pass_statistics`, if asked


@torch.no_grad()
def split_outputs(trainer, examples, true_labels: bool = True, batch_size: int = 512, classes=None,
                  statistics: bool = False) -> Outputs:
    """Predictions and probabilistic margins (against true labels unless told otherwise; against the
    observed ones too), batch by batch: the host keeps O(len(examples)) scalars, never the logits.
    With `classes`, over those classes only (the other logits masked to -inf, the subset-class protocol)."""
    was_training = trainer.model.training
    trainer.model.eval()
    preds, margins, observed, stats = [], [], [], defaultdict(list)
    for b in examples.batches(batch_size, train=False, loading=trainer.loading):
        b = b.to(trainer.device)
        with head_inputs(trainer.model) if statistics else nullcontext([]) as feats:
            z = trainer.eval_logits(b)
        if statistics:
            out = BatchOutputs(z, F.cross_entropy(z, b.y, reduction="none"), feats[0] if feats else None)
            for k, v in trainer.pass_statistics(b, out).items():
                stats[k].append(v.float().cpu())
        if classes is not None:
            z = mask_to(z, classes)
        y_obs = b.y.to(trainer.device)
        m_obs = probabilistic_margin(z, y_obs)
        preds.append(z.argmax(1).cpu())
        observed.append(m_obs.cpu())
        margins.append(probabilistic_margin(z, b.y_true.to(trainer.device)).cpu() if true_labels else observed[-1])
    trainer.model.train(was_training)
    y = examples.true_labels if true_labels else examples.labels
    cat = lambda parts, dtype: (torch.cat(parts) if parts else torch.empty(0, dtype=dtype)).numpy()  # noqa: E731
    return Outputs(ids=examples.ids.numpy(), labels=y.numpy(), preds=cat(preds, torch.long),
                   margins=cat(margins, torch.float), observed_margins=cat(observed, torch.float),
                   statistics={k: torch.cat(v).numpy() for k, v in stats.items()},
                   groups=None if examples.groups is None else examples.groups.numpy())


def split_metrics(name: str, o: Outputs, examples, evaluator, observed: bool) -> dict[str, float]:
    """Accuracy, mean margin, worst-group accuracy and the dataset's official metrics of one split."""
    metrics = {}
    correct = o.preds == o.labels
    metrics[f"{name}/acc"] = float(correct.mean())
    if observed:
        metrics[f"{name}/acc_true"] = float((o.preds == examples.true_labels.numpy()).mean())
    metrics[f"{name}/margin_mean"] = float(o.margins.mean())
    if o.groups is not None:
        accs = [correct[o.groups == g].mean() for g in np.unique(o.groups)]
        metrics[f"{name}/worst_group_acc"] = float(min(accs))
    if evaluator is not None and not observed:
        for k, v in evaluator(name, torch.as_tensor(o.preds), examples).items():
            metrics[f"{name}/{k}"] = float(v)
    return metrics
