"""The configuration of one trial, its validation against the registries, and its identity hash."""
from __future__ import annotations

import hashlib
import json

from pydantic import Field

from molere.config import ConfigError, GuardConfig, Strict, TrainConfig, upgrade, validate

from benchmarks.data.load import DatasetConfig
from benchmarks.data.regimes import RegimeConfig

# Fields that depend on the machine, not on the experiment: never part of a trial's identity.
MACHINE_FIELDS = (("dataset", "root"), ("train", "device"), ("train", "num_workers"), ("train", "tf32"),
                  ("train", "channels_last"), ("plugins",))


class ModelConfig(Strict):
    name: str = "mlp"
    options: dict = Field(default_factory=dict)


class MethodConfig(Strict):
    name: str = "erm"
    hparams: dict = Field(default_factory=dict)


class TrialConfig(Strict):
    """Everything that defines one run: data, label regime, model, method, training settings, seed."""
    dataset: DatasetConfig
    regime: RegimeConfig = Field(default_factory=RegimeConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = Field(0, ge=0, lt=2**32)
    plugins: list[str] = Field(default_factory=list)


def resolve(cfg: TrialConfig) -> TrialConfig:
    """Check every name against the registries and fill the method's default hyperparameters."""
    from benchmarks import catalog
    from benchmarks.models import parse_model_name
    catalog.import_plugins(cfg.plugins)
    method_cls = catalog.METHODS.get(cfg.method.name)
    hp = validate(method_cls.Hparams, cfg.method.hparams, prefix="method.hparams")
    catalog.DATASETS.get(cfg.dataset.name)
    catalog.MODELS.get(parse_model_name(cfg.model.name)[0])
    return cfg.model_copy(update={"method": MethodConfig(name=cfg.method.name, hparams=hp.model_dump())})


def method_hparams(cfg: TrialConfig):
    """The method class of a resolved (or stored) trial config and its typed hyperparameters; `resolve` has
    checked them (with one-line errors), a stored plan may hold renamed fields under their old names."""
    from benchmarks import catalog
    cls = catalog.METHODS.get(cfg.method.name)
    return cls, cls.Hparams.model_validate(upgrade(cls.Hparams, cfg.method.hparams))


def identity(cfg: TrialConfig) -> dict:
    """The resolved configuration without machine-specific fields."""
    d = cfg.model_dump(mode="json")
    if d["train"].get("guard") == GuardConfig().model_dump(mode="json"):
        del d["train"]["guard"]   # the default guard keeps the ids trials had before it existed
    d["method"]["hparams"] = _names_before_renames(d["method"])
    for path in MACHINE_FIELDS:
        node = d
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    return d


def _names_before_renames(method: dict) -> dict:
    """The hyperparameters as trials stored before a rename or an addition: old names (`Strict.renamed`), fields
    added since (`Strict.added`) left out at their defaults; both keep trial ids."""
    from benchmarks import catalog
    hp = catalog.METHODS.get(method["name"]).Hparams
    back = {new: old for old, new in getattr(hp, "renamed", {}).items()}
    fields = hp.model_fields
    new_at_default = {k for k in getattr(hp, "added", ()) if k in method["hparams"]
                      and method["hparams"][k] == fields[k].default}
    return {back.get(k, k): v for k, v in method["hparams"].items() if k not in new_at_default}


def trial_id(cfg: TrialConfig) -> str:
    """Stable hash of a resolved trial configuration (machine paths excluded)."""
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def erm_reference_config(cfg: TrialConfig) -> TrialConfig:
    """The reference (ERM) trial of the same (dataset, regime, model, seed, training settings)."""
    from benchmarks import catalog
    return cfg.model_copy(update={"method": MethodConfig(name=catalog.METHODS.reference(), hparams={})})
