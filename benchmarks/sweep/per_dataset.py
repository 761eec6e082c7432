"""What a sweep's dataset entry may set for itself instead of the sweep: its model (and, in the schema, its
regimes and method hyperparameters)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from molere.config import ConfigError, validate
from molere.registry import UnknownNameError

from benchmarks import catalog
from benchmarks.models import parse_model_name
from benchmarks.trial.config import ModelConfig

if TYPE_CHECKING:
    from benchmarks.sweep.schema import Sweep, SweepDataset


def model_of(sweep: Sweep, ds: SweepDataset) -> ModelConfig:
    """The model trained on dataset `ds`: its own, else the sweep's."""
    return ds.model or sweep.model


def models_of(sweep: Sweep) -> list[ModelConfig]:
    """Every distinct model of the sweep (the datasets' own, else the sweep's), in order."""
    out: list[ModelConfig] = []
    for m in [model_of(sweep, ds) for ds in sweep.datasets]:
        if m not in out:
            out.append(m)
    return out


def model_entry(model: ModelConfig, where: str):
    """(registry entry, validated options) of a model, or ConfigError naming `where`."""
    name, opts = parse_model_name(model.name, model.options)
    try:
        entry = catalog.MODELS.get(name)
    except UnknownNameError as exc:
        raise ConfigError(f"{where}.name: {exc}") from None
    return entry, validate(entry.Options, opts, f"{where}.options")
