"""The train-twice heuristic (paper §2.6): LRW-Hard / LRW-Easy / LRW-Random and their ERM controls.

The ERM classifier of the key (the stored trial, else trained in-process the same way) ranks the pool
(train + official val) by margin; a δ fraction (hard: lowest margins, easy: highest, random) becomes the
validation set of LRW trained from scratch on the rest. `erm_withheld_*` train plain ERM on exactly that
rest. `ranking: crossfit` (default) scores every pool example out of fold, so official-val examples are not
"hard" merely for being unseen; `erm_on_train` is the earlier procedure. Ranking, sizes, seeding and the
measured official-val shares: docs/methods/train_twice.md.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from molere.config import ConfigError, Strict
from molere.data import ExampleSet
from molere.evaluation import final_eval_only
from molere.lrw_trainer import LRWHparams, LRWTrainer
from molere.registry import LRW_PANEL, MethodCard, register_method
from molere.trainer import RunContext, Trainer

from .crossfit import crossfit_margins
from .erm import ERM

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


def select_validation(ids: np.ndarray, margins: np.ndarray, labels: np.ndarray, delta: float,
                      selection: Selection, seed: int, class_balanced: bool = False) -> np.ndarray:
    """Sorted pool positions of the validation set: round(δ·n) of the pool (or of every class) with the lowest
    margins (hard) or the highest (easy), ties by id, or a seeded random draw in id order."""
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
    reference_method: type[Trainer] = ERM   # trained in-process when the store has no ERM trial of the key
    trains_on_val = True     # the pool is train + official val

    def _train_erm(self, pool: ExampleSet) -> np.ndarray:
        ctx: RunContext = self.context
        if ctx.model_factory is None:
            raise ConfigError(f"method {self.registered_name!r}: no reference ERM margins and no "
                              "model factory to train ERM with (RunContext.model_factory)")
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(ctx.seed)
            erm = self.reference_method(ctx.model_factory(), self.data, final_eval_only(self.cfg), None,
                                     RunContext(seed=ctx.seed, device=ctx.device, model_factory=ctx.model_factory,
                                                run_config=ctx.run_config, cpus=ctx.cpus))
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
        self.info["erm_pass"] = "in_process"
        return self._train_erm(pool)

    def _stored_crossfit(self, pool: ExampleSet) -> np.ndarray | None:
        ref = self.context.reference
        stored = ref.erm_crossfit_margins(self.hp.crossfit_folds) if ref is not None else None
        return None if stored is None else align(pool.ids.numpy(), *stored)

    def crossfit_margins(self, pool: ExampleSet) -> np.ndarray:
        """Out-of-fold ERM margins of `pool` (`baselines.crossfit`): reused if stored, else trained here."""
        stored = self._stored_crossfit(pool)
        if stored is not None:
            self.info["erm_pass"] = "reused"
            return stored
        self.info["erm_pass"] = "in_process"
        return crossfit_margins(pool, self.data, self.cfg, self.context, self.hp.crossfit_folds, self.device)

    def _other_ranking(self, pool: ExampleSet) -> tuple[str, np.ndarray | None]:
        """The ranking not used, when its margins exist without training (for the before/after share)."""
        if self.hp.ranking == "crossfit":
            ref = self.context.reference
            stored = ref.erm_pool_margins() if ref is not None else None
            return "erm_on_train", None if stored is None else align(pool.ids.numpy(), *stored)
        return "crossfit", self._stored_crossfit(pool)

    def train_twice_split(self) -> tuple[ExampleSet, ExampleSet]:
        """(rest, validation set) of the pooled data; facts about the selection go to `self.info`."""
        pool = self.data.pool()
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
    card = MethodCard(label="LRW-Hard", color="#2ca02c", ordering=2, panel=LRW_PANEL, margin_bins=True, rank=4)
    selection = "hard"


@register_method("lrw_easy")
class LRWEasy(_LRWTrainTwice):
    """LRW-Easy: LRW validated on the δ fraction with the highest ERM margins (train-twice)."""
    card = MethodCard(label="LRW-Easy", color="#ff7f0e", ordering=0, panel=LRW_PANEL, margin_bins=True, rank=2)
    selection = "easy"


@register_method("lrw_random")
class LRWRandom(_LRWTrainTwice):
    """LRW-Random: LRW validated on a random δ fraction of the pooled data (seeded by the trial seed)."""
    card = MethodCard(label="LRW-Random", color="#1f77b4", ordering=1, panel=LRW_PANEL, rank=3)
    selection = "random"


@register_method("erm_withheld_hard")
class ERMWithheldHard(_ERMWithheld):
    """Control of lrw_hard: ERM on the same split (lowest-margin δ fraction withheld, no reweighting)."""
    card = MethodCard(label="ERM, Hard withheld", role="control", control_of="lrw_hard", rank=8)
    selection = "hard"


@register_method("erm_withheld_easy")
class ERMWithheldEasy(_ERMWithheld):
    """Control of lrw_easy: ERM on the same split (highest-margin δ fraction withheld, no reweighting)."""
    card = MethodCard(label="ERM, Easy withheld", role="control", control_of="lrw_easy", rank=6)
    selection = "easy"


@register_method("erm_withheld_random")
class ERMWithheldRandom(_ERMWithheld):
    """Control of lrw_random: ERM on the same split (the same random δ fraction withheld)."""
    card = MethodCard(label="ERM, Random withheld", role="control", control_of="lrw_random", rank=7)
    selection = "random"
