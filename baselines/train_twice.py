"""The train-twice heuristic (paper §2.6): LRW-Hard / LRW-Easy / LRW-Random and their ERM controls.

1. ERM pass: probabilistic margins (observed labels, evaluation transforms) of the pooled train +
   official val data under ERM classifiers of the same (dataset, regime, model, seed, training
   settings). `ranking` says which:
   - `crossfit` (default): out-of-fold margins, every pool example scored by an ERM model trained on
     the other folds (`baselines.crossfit`; `crossfit_folds` = 2), so train and val are scored alike;
   - `erm_on_train` (the earlier procedure): one ERM trained on the official train split scores the
     pool, i.e. train in-sample and val held-out, so the Hard set over-represents official val
     (measured 12.7-26.1% against a 10% base rate on digits / MNIST-1D).
   Both come from the stored ERM trial of the same key (`context.reference`), or when there is none
   from ERM runs trained here in-process (`torch.manual_seed(seed)`, then `context.model_factory()`:
   the same model and training as the ERM trial; the global RNG state is restored afterwards) and
   offered back to the provider.
2. The pool is ranked by margin (stable sort by (margin, id)) and a δ fraction becomes the validation
   set: the lowest margins (hard), the highest (easy) or a random subset seeded by the trial seed.
   Its size is round(δ·N_pool) (Python's round: halves to even), or round(δ·N_c) within every
   observed class c with `class_balanced`.
3. LRW (`molere.lrw`) is trained from scratch on the rest with that fixed validation set.

Controls `erm_withheld_{hard,easy,random}`: plain ERM on exactly the training split of the matching LRW
variant (same ERM ranking, same δ fraction withheld, no reweighting), which separates the effect of
reweighting from the effect of removing the selected examples from training.

Every trial records the validation set's share of official-val examples, of examples the ranking ERM
misclassifies (margin < 0) and of mislabelled ones, with the pool's base rates (`method_info`), and the
official-val share the other ranking would give when its margins are at hand without training.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from molere.config import ConfigError, Strict
from .crossfit import crossfit_margins
from molere.data import ExampleSet, TaskData
from molere.lrw import LRWHparams, LRWTrainer
from molere.registry import METHODS, register_method
from molere.trainer import RunContext, Trainer

Selection = Literal["hard", "easy", "random"]
Ranking = Literal["crossfit", "erm_on_train"]


class TrainTwiceOptions(Strict):
    """Which δ fraction of the pooled data becomes the validation set."""
    delta: float = Field(0.1, gt=0, lt=1, description="fraction of the pooled train + val data used for validation")
    class_balanced: bool = Field(False, description="take the δ fraction within every observed class")
    ranking: Ranking = Field("crossfit", description="margins that rank the pool: out-of-fold ERM (default, "
                                                     "train and val scored alike) or ERM on the official train split")
    crossfit_folds: int = Field(2, ge=2, le=10, description="folds of the crossfit ranking")


class TrainTwiceHparams(LRWHparams, TrainTwiceOptions):
    """LRW's options plus the choice of its validation set."""


def pooled(data: TaskData) -> ExampleSet:
    """Official train + val (train alone when the dataset has no val split)."""
    return data.train if data.val is None else ExampleSet.concat(data.train, data.val)


def select_validation(ids: np.ndarray, margins: np.ndarray, labels: np.ndarray, delta: float,
                      selection: Selection, seed: int, class_balanced: bool = False) -> np.ndarray:
    """Sorted pool positions of the validation set (see the module docstring for the rule)."""
    ids, margins, labels = np.asarray(ids), np.asarray(margins), np.asarray(labels)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if class_balanced else [np.arange(len(ids))]
    rng = np.random.default_rng(seed)
    chosen = []
    for pos in groups:
        k = int(round(delta * len(pos)))
        if selection == "random":
            order = pos[np.argsort(ids[pos], kind="stable")]   # canonical order, independent of pool order
            order = order[rng.permutation(len(order))]
        else:
            key = margins[pos] if selection == "hard" else -margins[pos]
            order = pos[np.lexsort((ids[pos], key))]           # by margin, ties by id
        chosen.append(order[:k])
    out = np.sort(np.concatenate(chosen))
    if not 0 < len(out) < len(ids):
        raise ConfigError(f"method.hparams.delta: selects {len(out)} of {len(ids)} pooled examples; "
                          f"needs between 1 and {len(ids) - 1} (got {delta})")
    return out


def align(pool_ids: np.ndarray, ids: np.ndarray, margins: np.ndarray) -> np.ndarray:
    """`margins` (given for `ids`) in the order of `pool_ids`; every pool id must be present."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = np.asarray(ids)[order]
    at = np.clip(np.searchsorted(sorted_ids, pool_ids), 0, max(len(sorted_ids) - 1, 0))
    found = sorted_ids[at] == pool_ids if len(sorted_ids) else np.zeros(len(pool_ids), bool)
    if not found.all():
        raise ValueError(f"the ERM reference margins miss {int((~found).sum())} of {len(pool_ids)} pooled "
                         "examples (a different dataset or split?)")
    return np.asarray(margins)[order][at]


class TrainTwiceSplit:
    """Mixin for a `Trainer`: the ERM margins of the pool and the δ split they define."""

    selection: Selection = "hard"
    needs_reference = True   # the sweep runner schedules the ERM trial of the same key first
    trains_on_val = True     # the pool is train + official val

    def _train_erm(self, pool: ExampleSet) -> np.ndarray:
        ctx: RunContext = self.context
        if ctx.model_factory is None:
            raise ConfigError(f"method {self.registered_name!r}: no reference ERM margins and no "
                              "model factory to train ERM with (RunContext.model_factory)")
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(ctx.seed)
            erm = METHODS.get("erm")(ctx.model_factory(), self.data, self.cfg, None,
                                     RunContext(seed=ctx.seed, device=ctx.device, model_factory=ctx.model_factory,
                                                run_config=ctx.run_config))
            erm.fit()
            return erm.outputs(pool, true_labels=False).margins

    def erm_margins(self, pool: ExampleSet) -> np.ndarray:
        """ERM-on-train margins (observed labels) of `pool`, in pool order: reused if available, else trained."""
        ref = self.context.reference
        pool_ids = pool.ids.numpy()
        stored = ref.erm_pool_margins() if ref is not None else None
        if stored is not None:
            self.info["erm_pass"] = "reused"
            return align(pool_ids, *stored)
        margins = self._train_erm(pool)
        self.info["erm_pass"] = "in_process"
        if ref is not None:
            ref.offer_erm_pool_margins(pool_ids, margins)
        return margins

    def _stored_crossfit(self, pool: ExampleSet) -> np.ndarray | None:
        ref = self.context.reference
        get = getattr(ref, "erm_crossfit_margins", None)
        stored = get(self.hp.crossfit_folds) if get is not None else None
        return None if stored is None else align(pool.ids.numpy(), *stored)

    def crossfit_margins(self, pool: ExampleSet) -> np.ndarray:
        """Out-of-fold ERM margins of `pool` (`baselines.crossfit`): reused if stored, else trained here."""
        stored = self._stored_crossfit(pool)
        if stored is not None:
            self.info["erm_pass"] = "reused"
            return stored
        margins = crossfit_margins(pool, self.data, self.cfg, self.context, self.hp.crossfit_folds, self.device)
        self.info["erm_pass"] = "in_process"
        offer = getattr(self.context.reference, "offer_erm_crossfit_margins", None)
        if offer is not None:
            offer(self.hp.crossfit_folds, pool.ids.numpy(), margins)
        return margins

    def _other_ranking(self, pool: ExampleSet) -> tuple[str, np.ndarray | None]:
        """The ranking not used, when its margins exist without training (for the before/after share)."""
        if self.hp.ranking == "crossfit":
            ref = self.context.reference
            stored = ref.erm_pool_margins() if ref is not None else None
            return "erm_on_train", None if stored is None else align(pool.ids.numpy(), *stored)
        return "crossfit", self._stored_crossfit(pool)

    def train_twice_split(self) -> tuple[ExampleSet, ExampleSet]:
        """(rest, validation set) of the pooled data; facts about the selection go to `self.info`."""
        pool = pooled(self.data)
        margins = self.crossfit_margins(pool) if self.hp.ranking == "crossfit" else self.erm_margins(pool)
        self.ranking_margins = (pool.ids.numpy(), margins)
        select = lambda m: select_validation(pool.ids.numpy(), m, pool.labels.numpy(), self.hp.delta,
                                             self.selection, self.context.seed, self.hp.class_balanced)
        val_pos = select(margins)
        mask = np.ones(len(pool), dtype=bool)
        mask[val_pos] = False
        rest, val = pool.subset(np.flatnonzero(mask)), pool.subset(val_pos)
        noisy = (pool.labels != pool.true_labels).numpy()
        official_val = np.isin(pool.ids.numpy(), self.data.val.ids.numpy()) if self.data.val is not None \
            else np.zeros(len(pool), bool)
        shares = {self.hp.ranking: float(official_val[val_pos].mean())}
        other, other_margins = self._other_ranking(pool)
        if other_margins is not None:
            shares[other] = float(official_val[select(other_margins)].mean())
        self.info.update(selection=self.selection, delta=self.hp.delta, class_balanced=self.hp.class_balanced,
                         ranking=self.hp.ranking, pool_size=len(pool), val_size=len(val), train_size=len(rest),
                         val_erm_margin_mean=float(margins[val_pos].mean()),
                         rest_erm_margin_mean=float(margins[mask].mean()),
                         val_noise_fraction=float(noisy[val_pos].mean()),
                         rest_noise_fraction=float(noisy[mask].mean()),
                         pool_noise_fraction=float(noisy.mean()),
                         val_official_val_share=shares[self.hp.ranking],
                         pool_official_val_share=float(official_val.mean()),
                         val_official_val_share_by_ranking=shares,
                         val_erm_misclassified_share=float((margins[val_pos] < 0).mean()),
                         pool_erm_misclassified_share=float((margins < 0).mean()))
        return rest, val


class _LRWTrainTwice(TrainTwiceSplit, LRWTrainer):
    """LRW from scratch on the rest of the pool, with the selected δ fraction as validation set."""
    Hparams = TrainTwiceHparams

    def split(self):
        return self.train_twice_split()


class _ERMWithheld(TrainTwiceSplit, Trainer):
    """ERM on the LRW variant's training split; the selected δ fraction is withheld (`self.withheld`)."""
    Hparams = TrainTwiceOptions

    def split(self):
        rest, self.withheld = self.train_twice_split()
        return rest, None


@register_method("lrw_hard")
class LRWHard(_LRWTrainTwice):
    """LRW-Hard: LRW validated on the δ fraction with the lowest ERM margins (train-twice)."""
    selection = "hard"


@register_method("lrw_easy")
class LRWEasy(_LRWTrainTwice):
    """LRW-Easy: LRW validated on the δ fraction with the highest ERM margins (train-twice)."""
    selection = "easy"


@register_method("lrw_random")
class LRWRandom(_LRWTrainTwice):
    """LRW-Random: LRW validated on a random δ fraction of the pooled data (seeded by the trial seed)."""
    selection = "random"


@register_method("erm_withheld_hard")
class ERMWithheldHard(_ERMWithheld):
    """Control of lrw_hard: ERM on the same split (lowest-margin δ fraction withheld, no reweighting)."""
    selection = "hard"


@register_method("erm_withheld_easy")
class ERMWithheldEasy(_ERMWithheld):
    """Control of lrw_easy: ERM on the same split (highest-margin δ fraction withheld, no reweighting)."""
    selection = "easy"


@register_method("erm_withheld_random")
class ERMWithheldRandom(_ERMWithheld):
    """Control of lrw_random: ERM on the same split (the same random δ fraction withheld)."""
    selection = "random"
