"""Sweep files: the schema, `--set` overrides and complete validation (the expansion into trials:
`benchmarks.sweep.plan`). Everything is checked here, before anything starts; bad input raises one line
naming the file, the field and what is allowed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from molere.config import ConfigError, Strict, TrainConfig, validate
from molere.registry import UnknownNameError

from benchmarks import catalog
from benchmarks.sweep import safe_yaml
from benchmarks.trial.config import ModelConfig
from benchmarks.data.load import DatasetConfig, check_dataset
from benchmarks.data.datasets.common import DataMissingError
from benchmarks.data.regimes import RegimeConfig, regime_label
from benchmarks.sweep.per_dataset import model_entry, model_of, models_of
from benchmarks.sweep.safe_yaml import excerpt
from benchmarks.sweep.draws import NESTED_TRAIN, method_draws
from benchmarks.sweep.search_space import searchable


# ---- schema -------------------------------------------------------------------------------------
ALL_METHODS = "*"           # a `methods` key standing for every registered method not listed
# training settings in which any field but the machine ones may be a search space ({loguniform: [lo, hi]}, ...)
SearchableTrain = searchable(TrainConfig, skip=("device", "num_workers", *NESTED_TRAIN))


class SweepDataset(Strict):
    name: str
    root: str | None = Field(None, description="folder holding the data (datasets read from disk)")
    options: dict = Field(default_factory=dict, description="the dataset's Options")
    train: dict = Field(default_factory=dict, description="training settings (or search spaces) overriding the "
                                                          "sweep's for this dataset")
    model: ModelConfig | None = Field(None, description="this dataset's model (default: the sweep's)")
    regimes: list[RegimeConfig] | None = Field(None, min_length=1, description="this dataset's label regimes "
                                               "(default: the sweep's)")
    hparams: dict[str, dict] = Field(default_factory=dict, description="method name -> hyperparameters overriding "
                                     "the sweep's for this dataset (e.g. lookahead_scope: head for a ViT)")


class SearchConfig(Strict):
    hparam_seed: int = Field(0, ge=0, description="seed of the quasi-random hyperparameter draws (not a trial seed)")
    num_samples: int = Field(1, gt=0, description="draws per method, draw 0 = the base configuration (grids are "
                                                  "crossed with them; docs/model_selection.md)")


class Resources(Strict):
    cpu: float = Field(1.0, gt=0, description="CPUs per trial (also the trial's torch threads)")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial; fractions pack trials on one GPU")
    time_limit_s: float | None = Field(None, gt=0, description="wall-clock limit of one trial (then: killed with "
                                       "everything it started, failed, 'time limit'); default: 20 x its ERM "
                                       "trial's wall time, at least 600 s; 2 h per epoch while unmeasured")

    @field_validator("gpu")
    @classmethod
    def _whole_or_fraction(cls, gpu: float) -> float:
        if gpu > 1 and gpu != int(gpu):
            raise ValueError("a fraction of one GPU (0 < gpu <= 1) or a whole number of GPUs")
        return gpu


class WandbConfig(Strict):
    project: str = "molere-bench"
    entity: str | None = None
    mode: Literal["auto", "offline", "online", "disabled"] = Field(
        "auto", description="auto: online when an API key is configured, else offline")
    dir: str | None = Field(None, description="where runs are written (default: the sweep directory)")
    log_every_steps: int = Field(50, gt=0, description="log step loss, lr, weight norms and images/s every N steps")
    stats_interval_s: float | None = Field(None, ge=0.1, description="system-metrics sampling interval (default: wandb's)")
    flush_interval_s: float = Field(5.0, gt=0, description="seconds between writes of a run's local .wandb file "
                                                           "(what a killed trial keeps)")
    dashboard: bool = Field(True, description="build the sweep's W&B workspace and report at the end")


class StoreConfig(Strict):
    checkpoint: bool = Field(False, description="checkpoint every epoch (and step-wise, below) so an interrupted "
                                                "trial resumes where it stopped; off: no checkpoint is read")
    checkpoint_steps: int | None = Field(None, gt=0, description="also checkpoint every N optimizer steps")
    checkpoint_minutes: float | None = Field(None, gt=0, description="also checkpoint every M minutes of training")


class Sweep(Strict):
    """One benchmark: what to run, how often, with what resources, logged where."""
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    results_dir: str = "results"
    datasets: list[SweepDataset] = Field(min_length=1)
    regimes: list[RegimeConfig] = Field(default_factory=lambda: [RegimeConfig()], min_length=1)
    model: ModelConfig = Field(default_factory=ModelConfig)
    methods: dict[str, dict | None] = Field(
        min_length=1, description="method name -> hyperparameters or search spaces; a `train` key holds this "
                                  "method's own training settings or search spaces; `\"*\"`: every registered "
                                  "method not listed (with these hyperparameters)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    train: SearchableTrain = Field(default_factory=SearchableTrain,
                                   description="training settings; any field may be a search space")
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: Resources = Field(default_factory=Resources)
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    plugins: list[str] = Field(default_factory=list, description="modules registering extra methods")
    store: StoreConfig = Field(default_factory=StoreConfig)
    reproduces: str | None = Field(None, description="the paper result this sweep reproduces (figure1, figure2, "
                                   "table2, table3, table4): the report adds its paper view")

    @field_validator("reproduces")
    @classmethod
    def _known_result(cls, name: str | None) -> str | None:
        if name is not None:
            from benchmarks.report.paper_numbers import result_names
            if name not in result_names():
                raise ValueError(f"one of {', '.join(result_names())} (got {name!r})")
        return name

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if any(not 0 <= s < 2**32 for s in seeds):
            raise ValueError("seeds must be integers in [0, 2**32)")
        if len(set(seeds)) != len(seeds):
            raise ValueError("duplicate seeds; list every seed once")
        return seeds

    @field_validator("datasets")
    @classmethod
    def _unique_datasets(cls, datasets: list[SweepDataset]) -> list[SweepDataset]:
        names = [d.name for d in datasets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate dataset entries {dup}; list each dataset once")
        return datasets

    @field_validator("regimes")
    @classmethod
    def _unique_regimes(cls, regimes: list[RegimeConfig]) -> list[RegimeConfig]:
        labels = [regime_label(r) for r in regimes]
        dup = sorted({n for n in labels if labels.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate regimes {dup}; list each regime once")
        return regimes

    @property
    def directory(self) -> Path:
        return Path(self.results_dir) / self.name


# ---- loading -------------------------------------------------------------------------------------
def _step(node, key: str, path: str):
    """The child of `node` at `key`: a dict key, a list index, or the list entry whose `name` is key."""
    if isinstance(node, list):
        if key.lstrip("-").isdigit() and -len(node) <= int(key) < len(node):
            return int(key)
        named = [i for i, item in enumerate(node) if isinstance(item, dict) and item.get("name") == key]
        if named:
            return named[0]
        raise ConfigError(f"--set {path}: {key!r} is neither an index below {len(node)} nor a listed name")
    if isinstance(node, dict):
        return key
    raise ConfigError(f"--set {excerpt(path)}: cannot go into {excerpt(key)!r}, the value above it is {excerpt(node)}")


def apply_override(raw: dict, text: str) -> None:
    """Apply one `a.b.c=value` to the raw sweep dict, creating missing keys; the value is YAML, typed by the
    field it sets (`benchmarks.cli_values`: `methods.l2rw.meta_labels=true` sets the string "true")."""
    if "=" not in text:
        raise ConfigError(f"--set: expected key=value (got {excerpt(text)!r})")
    path, value = text.split("=", 1)
    keys = path.split(".")
    if not all(keys):
        raise ConfigError(f"--set: bad key {excerpt(path)!r}")
    node = raw
    for key in keys[:-1]:
        k = _step(node, key, path)
        if isinstance(node, dict) and not isinstance(node.get(k), (dict, list)):
            node[k] = {}
        node = node[k]
    from benchmarks.cli_values import sweep_field_type, typed_value
    try:
        parsed = typed_value(value, sweep_field_type(raw, keys))
    except ConfigError as exc:
        raise ConfigError(f"--set {excerpt(path, 40)}: {exc}") from None
    node[_step(node, keys[-1], path)] = parsed


def read_raw(path: str | os.PathLike) -> dict:
    raw = safe_yaml.load_file(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"the file must hold a mapping with name, datasets, methods, ... (got {type(raw).__name__})")
    return raw


def _check_names(sweep: Sweep) -> None:
    for ds in sweep.datasets:
        try:
            cls = catalog.DATASETS.get(ds.name)
        except UnknownNameError as exc:
            raise ConfigError(f"datasets.{ds.name}: {exc}") from None
        validate(cls.Options, ds.options, f"datasets.{ds.name}.options")
        stray = sorted(set(ds.hparams) - set(sweep.methods))
        if stray:
            raise ConfigError(f"datasets.{ds.name}.hparams.{stray[0]}: not a method of this sweep "
                              f"({', '.join(sweep.methods)})")
    for ds in sweep.datasets:   # the model against each dataset's input, when that is known before loading
        entry, model_opts = model_entry(model_of(sweep, ds), f"datasets.{ds.name}.model" if ds.model else "model")
        ds_cls = catalog.DATASETS.get(ds.name)
        shape = getattr(ds_cls, "input_shape", None)
        try:
            if shape is not None and hasattr(entry, "check"):
                entry.check(getattr(ds_cls, "num_classes", 10), shape, model_opts)
            elif hasattr(entry, "check_options"):
                entry.check_options(model_opts)
        except ConfigError as exc:
            raise ConfigError(f"model on datasets.{ds.name}: {exc}") from None
        for method in sweep.methods:
            for draw in method_draws(sweep, method, ds):
                device = draw.train.device
                if device.startswith("cuda") and not sweep.resources.gpu:
                    raise ConfigError(f"datasets.{ds.name}: train.device {device!r} needs resources.gpu > 0 "
                                      "(a trial gets no GPU otherwise); or use device: auto")


def expand_all_methods(raw: dict) -> None:
    """`methods: {"*": {...}, ...}`: every registered method (plugins included) not listed gets the "*" entry."""
    methods = raw.get("methods")
    if isinstance(methods, dict) and ALL_METHODS in methods:
        rest = methods.pop(ALL_METHODS)
        raw["methods"] = {**methods, **{m: rest for m in catalog.METHODS.names() if m not in methods}}


def load_sweep(path: str | os.PathLike, sets: list[str] = (), results: str | None = None) -> Sweep:
    """Read, override and validate a sweep file completely (names, hyperparameters, draws)."""
    try:
        raw = read_raw(path)
        raw.setdefault("name", Path(path).stem)
        for text in sets or ():
            apply_override(raw, text)
        if results is not None:
            raw["results_dir"] = results
        plugins = raw.get("plugins") or []
        if not (isinstance(plugins, list) and all(isinstance(p, str) for p in plugins)):
            raise ConfigError(f"plugins: a list of importable module names (got {excerpt(plugins)})")
        catalog.import_plugins(plugins)
        expand_all_methods(raw)
        sweep = validate(Sweep, raw, "")
        _check_names(sweep)
    except (ConfigError, UnknownNameError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for ds in sweep.datasets:   # trials may run in other working directories
        if ds.root is not None:
            ds.root = os.path.abspath(os.path.expanduser(ds.root))
    if sweep.wandb.dir is not None:
        sweep.wandb.dir = os.path.abspath(sweep.wandb.dir)
    for model in models_of(sweep):   # a local weight file, read by every trial
        if isinstance(model.options.get("weights"), str):
            model.options["weights"] = os.path.abspath(os.path.expanduser(model.options["weights"]))
    return sweep


def missing_data(sweep: Sweep, names: set[str] | None = None) -> list[str]:
    """One message per dataset (of `names`, default all) whose data is not reachable."""
    out = []
    for ds in sweep.datasets:
        if names is not None and ds.name not in names:
            continue
        try:
            check_dataset(DatasetConfig(name=ds.name, root=ds.root, options=ds.options))
        except DataMissingError as exc:
            out.append(f"datasets.{ds.name}.root: {exc}")
    return out
