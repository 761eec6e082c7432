"""The train-twice heuristic (paper §2.6): LRW-Hard / LRW-Easy / LRW-Random and their ERM controls.

The ERM reference of the key (`self.reference`: the stored trial, else trained in-process the same way)
ranks the pool (train + official val) by margin; a δ fraction (hard: lowest margins, easy: highest,
random) becomes the validation set of LRW trained from scratch on the rest. `erm_withheld_*` train plain
ERM on exactly that rest. `ranking: crossfit` (default) scores every pool example out of fold, so
official-val examples are not "hard" merely for being unseen; `erm_on_train` is the earlier procedure.
Ranking, sizes, seeding and the measured official-val shares: docs/methods/train_twice.md.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from molere.config import ConfigError, Strict
from molere.data import ExampleSet
from molere.lrw_trainer import LRWHparams, LRWTrainer
from molere.reference import ReferenceMargins, ReferenceNeeds
from molere.registry import register_method
from molere.splits import Draw, held_positions, share
from molere.trainer import Trainer

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
    if selection == "random":   # canonical order by id, independent of pool order
        out = held_positions(groups, Draw(seed), share(delta), ids=ids)
    else:
        sign = 1 if selection == "hard" else -1
        out = np.sort(np.concatenate([pos[np.lexsort((ids[pos], sign * margins[pos]))][:int(round(delta * len(pos)))]
                                      for pos in groups]))   # by margin, ties by id
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
    trains_on_val = True     # the pool is train + official val

    @classmethod
    def reference_needs(cls, hp: TrainTwiceOptions) -> ReferenceNeeds:
        """The ERM pool margins (the erm_on_train ranking, or the other ranking's share) and, for the
        crossfit ranking, out-of-fold margins with `crossfit_folds` folds."""
        return ReferenceNeeds(pool_margins=True, oof_folds=(hp.crossfit_folds,) if hp.ranking == "crossfit" else ())

    def _margins(self, ranking: Ranking, train: bool = True) -> ReferenceMargins | None:
        ref = self.reference
        return ref.oof_margins(self.hp.crossfit_folds, train) if ranking == "crossfit" else ref.pool_margins(train)

    def ranking_of(self, pool: ExampleSet) -> np.ndarray:
        """The margins of `pool` by the method's `ranking`, in pool order (stored, else trained here)."""
        found = self._margins(self.hp.ranking)
        self.info["erm_pass"] = found.source
        return align(pool.ids.numpy(), found.ids, found.margins)

    def _other_ranking(self, pool: ExampleSet) -> tuple[str, np.ndarray | None]:
        """The ranking not used, when its margins exist without training (for the before/after share)."""
        other: Ranking = "erm_on_train" if self.hp.ranking == "crossfit" else "crossfit"
        found = self._margins(other, train=False)
        return other, None if found is None else align(pool.ids.numpy(), found.ids, found.margins)

    def train_twice_split(self) -> tuple[ExampleSet, ExampleSet]:
        """(rest, validation set) of the pooled data; facts about the selection go to `self.info`."""
        pool = self.data.pool()
        margins = self.ranking_of(pool)
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
    role, control_of = "control", "lrw_hard"
    selection = "hard"


@register_method("erm_withheld_easy")
class ERMWithheldEasy(_ERMWithheld):
    """Control of lrw_easy: ERM on the same split (highest-margin δ fraction withheld, no reweighting)."""
    role, control_of = "control", "lrw_easy"
    selection = "easy"


@register_method("erm_withheld_random")
class ERMWithheldRandom(_ERMWithheld):
    """Control of lrw_random: ERM on the same split (the same random δ fraction withheld)."""
    role, control_of = "control", "lrw_random"
    selection = "random"
