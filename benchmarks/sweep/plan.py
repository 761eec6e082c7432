"""Sweep planning: a validated Sweep expanded into trials (datasets x regimes x methods x draws x seeds,
each a resolved TrialConfig), the reference trials they need, and the `--only` selection."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from molere.config import ConfigError
from molere.reference import ReferenceNeeds

from benchmarks import catalog
from benchmarks.data.load import DatasetConfig, has_val
from benchmarks.data.regimes import regime_label
from benchmarks.report.cards import card_for
from benchmarks.sweep.draws import method_draws, search_space
from benchmarks.sweep.per_dataset import model_of
from benchmarks.sweep.same_data import learns_from_val, pooled_reference_config
from benchmarks.trial.config import (MethodConfig, TrialConfig, erm_reference_config, method_hparams, resolve,
                                     trial_id)

if TYPE_CHECKING:
    from benchmarks.sweep.schema import Sweep


def reference_needs(cfg: TrialConfig) -> ReferenceNeeds:
    """What the method of a resolved trial declares it needs from the reference run of its key."""
    cls, hp = method_hparams(cfg)
    return cls.reference_needs(hp)


@dataclass
class PlannedTrial:
    trial_id: str
    labels: dict
    config: TrialConfig
    erm_id: str                       # the ERM trial of the same key (itself for ERM)
    needs: ReferenceNeeds = field(default_factory=ReferenceNeeds)   # what it needs from that key's reference
    extra: dict = field(default_factory=dict)
    searched: dict = field(default_factory=dict)        # drawn values of searched training settings
    search_space: dict = field(default_factory=dict)    # the method's search spaces (see search_space())
    reference_only: bool = False                        # an ERM run added only because a method needs it
    same_data_id: str | None = None     # erm_train_val of the same key, when the method learns from val

    @property
    def needs_reference(self) -> bool:
        """Whether the ERM trial of its key must be done before it runs."""
        return self.needs.reference_trial and self.erm_id != self.trial_id

    def record(self) -> dict:
        return {"trial_id": self.trial_id, "labels": self.labels, "erm_trial_id": self.erm_id,
                "needs_reference": self.needs_reference, "reference_needs": self.needs.to_dict(),
                "config": self.config.model_dump(mode="json"),
                "search_space": self.search_space, "reference_only": self.reference_only,
                "same_data_trial_id": self.same_data_id,
                "method_card": self.card()}

    def card(self) -> dict:
        """The method's report card, recorded in plan.json (the report reads it)."""
        method = self.labels["method"]
        return card_for(method, catalog.METHODS.get(method)).to_dict()


def hparams_id(hparams: dict) -> str:
    return hashlib.sha256(json.dumps(hparams, sort_keys=True).encode()).hexdigest()[:8]


def _planned(cfg: TrialConfig, searched: dict | None = None, space: dict | None = None) -> PlannedTrial:
    """`searched`: the drawn training settings, part of the draw's hparams_id (absent without train spaces)."""
    cfg = resolve(cfg)
    hp = {**cfg.method.hparams, "train": searched} if searched else cfg.method.hparams
    labels = {"dataset": cfg.dataset.name, "regime": regime_label(cfg.regime), "method": cfg.method.name,
              "seed": cfg.seed, "hparams_id": hparams_id(hp)}
    pooled = learns_from_val(cfg.method.name, cfg.method.hparams) and has_val(cfg.dataset)
    return PlannedTrial(trial_id(cfg), labels, cfg, trial_id(erm_reference_config(cfg)),
                        reference_needs(cfg), searched=dict(searched or {}), search_space=space or {},
                        same_data_id=trial_id(resolve(pooled_reference_config(cfg))) if pooled else None)


def expand_trials(sweep: Sweep) -> list[PlannedTrial]:
    """datasets x regimes x methods x draws x seeds, in that order, without duplicates."""
    trials: dict[str, PlannedTrial] = {}
    for ds in sweep.datasets:
        data = DatasetConfig(name=ds.name, root=ds.root, options=ds.options)
        draws = {m: method_draws(sweep, m, ds) for m in sweep.methods}
        spaces = {m: search_space(sweep, m, ds) for m in sweep.methods}
        for regime in ds.regimes or sweep.regimes:
            for method, configs in draws.items():
                for d in configs:
                    for seed in sweep.seeds:
                        t = _planned(TrialConfig(dataset=data, regime=regime, model=model_of(sweep, ds),
                                                 method=MethodConfig(name=method, hparams=d.hparams), train=d.train,
                                                 seed=seed, plugins=sweep.plugins), d.searched, spaces[method])
                        trials.setdefault(t.trial_id, t)
    return with_references(list(trials.values()))


def with_references(trials: list[PlannedTrial]) -> list[PlannedTrial]:
    """Add the ERM trial of every key whose reference trial a planned method needs, and the same-data
    reference (erm_train_val, benchmarks.sweep.same_data) of every method that learns from val, when absent."""
    ids = {t.trial_id for t in trials}
    out = list(trials)
    for t in trials:
        for wanted, make in ((t.needs_reference and t.erm_id, erm_reference_config),
                             (t.same_data_id, pooled_reference_config)):
            if wanted and wanted not in ids:
                ref = _planned(make(t.config), t.searched,   # the training settings it was drawn at
                               {k: v for k, v in t.search_space.items() if k.startswith("train.")})
                ref.reference_only = True    # not a draw of the search: never a selection candidate
                ids.add(ref.trial_id)
                out.append(ref)
    return out


def select(trials: list[PlannedTrial], only: dict[str, set[str]]) -> list[PlannedTrial]:
    """The trials matching every `--only` filter, plus the ERM and same-data reference trials they need."""
    for key, values in only.items():
        known = {str(t.labels[key]) for t in trials}
        unknown = sorted(values - known)
        if unknown:
            raise ConfigError(f"--only {key}: {', '.join(unknown)} not in this sweep (it has {', '.join(sorted(known))})")
    keep = [t for t in trials if all(str(t.labels[k]) in v for k, v in only.items())]
    by_id = {t.trial_id: t for t in trials}
    ids = {t.trial_id for t in keep}
    for t in list(keep):
        for wanted in (t.erm_id if t.needs_reference else None, t.same_data_id):
            if wanted and wanted not in ids and wanted in by_id:
                keep.append(by_id[wanted])
                ids.add(wanted)
    return keep
