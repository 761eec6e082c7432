"""The draws of a sweep: every concrete configuration (hyperparameters, training settings) of each method.

Training settings merge sweep < dataset < method; search spaces expand by `benchmarks.sweep.search_space`
(draw 0 = the base configuration, common `train.*` candidates for every method). Like-for-like tuning:
docs/model_selection.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from molere.config import ConfigError, TrainConfig, one_line, validate
from molere.registry import UnknownNameError

from benchmarks import catalog
from benchmarks.sweep.search_space import TRAIN_PREFIX, expand, is_space, spaces_of

NESTED_TRAIN = ("guard",)   # training-setting blocks (a mapping, never a search space)

if TYPE_CHECKING:
    from benchmarks.sweep.schema import Sweep, SweepDataset


@dataclass
class Draw:
    """One concrete configuration of a method: its hyperparameters and training settings."""
    hparams: dict
    train: TrainConfig
    searched: dict      # the drawn values of the searched training settings (field -> value)


def _method_entry(sweep: Sweep, name: str, ds: SweepDataset | None = None) -> tuple[dict, dict]:
    """(hyperparameters, own training settings) of `methods.<name>` (with dataset `ds`'s own hyperparameters)."""
    raw = {**(sweep.methods[name] or {}), **((ds.hparams.get(name) or {}) if ds is not None else {})}
    own = raw.pop("train", None) or {}
    if not isinstance(own, dict):
        raise ConfigError(f"methods.{name}.train: a mapping of training settings or search spaces (got {own!r})")
    return raw, own


def _train_values(sweep: Sweep, ds: SweepDataset, name: str) -> tuple[dict, dict, dict]:
    """Training settings of (dataset, method) merged sweep < dataset < method, where each came from, and the
    base values (the settings without search spaces: draw 0). A method's own block may fix settings but not
    search them: a training-setting space is common to every method (like-for-like tuning)."""
    own = _method_entry(sweep, name)[1]
    for k, v in own.items():
        if is_space(v):
            raise ConfigError(f"methods.{name}.train.{k}: a training setting is searched for every method alike "
                              f"(common draws); put the space under train: or datasets.{ds.name}.train:")
    values, source, base = {}, {}, TrainConfig().model_dump(mode="json")
    for label, block in (("train", sweep.train.model_dump(mode="json")), (f"datasets.{ds.name}.train", ds.train),
                         (f"methods.{name}.train", own)):
        values.update(block)
        source.update(dict.fromkeys(block, label))
        base.update({k: v for k, v in block.items() if not is_space(v)})
    return values, source, base


def search_space(sweep: Sweep, name: str, ds: SweepDataset) -> dict:
    """The search spaces of one method on one dataset: hyperparameters by name, training settings as train.<field>."""
    values, _, _ = _train_values(sweep, ds, name)
    return {**spaces_of(_method_entry(sweep, name, ds)[0]), **{TRAIN_PREFIX + k: v for k, v in spaces_of(values).items()}}


def _check_train(values: dict, source: dict) -> TrainConfig:
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        raise ConfigError(one_line(exc, TrainConfig, source.get(str(loc[0]) if loc else "", "train"))) from None


def method_draws(sweep: Sweep, name: str, ds: SweepDataset) -> list[Draw]:
    """Every draw of method `name` on dataset `ds`: its hyperparameter and training-setting spaces expanded."""
    try:
        cls = catalog.METHODS.get(name)
    except UnknownNameError as exc:
        raise ConfigError(f"methods.{name}: {exc}") from None
    hp, _ = _method_entry(sweep, name, ds)
    values, source, base_train = _train_values(sweep, ds, name)
    blocks = {k: values.pop(k) for k in NESTED_TRAIN if k in values}   # e.g. guard: a mapping, never searched
    flat = {**hp, **{TRAIN_PREFIX + k: v for k, v in values.items()}}
    searched = [k for k, v in values.items() if isinstance(v, dict)]
    base = {**cls.Hparams().model_dump(mode="json"),
            **{TRAIN_PREFIX + k: v for k, v in base_train.items() if k not in NESTED_TRAIN}}

    def where(key: str) -> str:
        field_ = key[len(TRAIN_PREFIX):]
        return f"{source[field_]}.{field_}" if key.startswith(TRAIN_PREFIX) else f"methods.{name}.{key}"

    out = []
    for d in expand(flat, method=name, hparam_seed=sweep.search.hparam_seed, num_samples=sweep.search.num_samples,
                    where=where, base=base, sweep=sweep.name):
        train = _check_train({**{k[len(TRAIN_PREFIX):]: v for k, v in d.items() if k.startswith(TRAIN_PREFIX)},
                              **blocks}, source)
        hparams = validate(cls.Hparams, {k: v for k, v in d.items() if not k.startswith(TRAIN_PREFIX)}, f"methods.{name}")
        out.append(Draw(hparams.model_dump(mode="json"), train, {k: getattr(train, k) for k in searched}))
    if sweep.search.num_samples < 2 and any(is_space(v) and "grid" not in v for v in flat.values()):
        raise ConfigError(f"search.num_samples: draw 0 is the base configuration, so the random search spaces of "
                          f"{name} on {ds.name} need num_samples >= 2 (got {sweep.search.num_samples})")
    return out
