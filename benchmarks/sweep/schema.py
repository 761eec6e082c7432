"""Sweep files: the schema, `--set` overrides, complete validation and the expansion into trials.

A sweep is datasets x regimes x methods (x hyperparameter draws) x seeds, each a resolved TrialConfig.
Everything is checked here, before anything starts; bad input raises one line naming the file, the
field and what is allowed.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from molere.config import ConfigError, Strict, TrainConfig, validate
from molere.reference import ReferenceNeeds
from molere.registry import UnknownNameError

from benchmarks import catalog
from benchmarks.sweep import safe_yaml
from benchmarks.trial.config import MethodConfig, ModelConfig, TrialConfig, erm_reference_config, resolve, trial_id
from benchmarks.data.load import DatasetConfig, check_dataset, has_val
from benchmarks.data.datasets.common import DataMissingError
from benchmarks.data.regimes import RegimeConfig
from benchmarks.sweep.per_dataset import model_entry, model_of, models_of
from benchmarks.sweep.safe_yaml import excerpt
from benchmarks.sweep.draws import NESTED_TRAIN, Draw, method_draws, search_space  # noqa: F401  (Draw: re-exported)
from benchmarks.sweep.same_data import learns_from_val, pooled_reference_config
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


def regime_label(r: RegimeConfig) -> str:
    if r.kind == "clean":
        return "clean"
    value = r.imbalance if r.kind == "longtail" else r.rate
    return f"{r.kind}-{value:g}"


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


def reference_needs(cfg: TrialConfig) -> ReferenceNeeds:
    """What the method of a resolved trial declares it needs from the reference run of its key."""
    cls = catalog.METHODS.get(cfg.method.name)
    return cls.reference_needs(cls.Hparams.model_validate(cfg.method.hparams))


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


# ---- expansion ----------------------------------------------------------------------------------
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
                "method_card": catalog.METHODS.get(self.labels["method"]).card.to_dict()}   # the report reads it


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


ONLY_KEYS = ("method", "dataset", "regime", "seed")


def parse_only(items: list[str]) -> dict[str, set[str]]:
    only: dict[str, set[str]] = {}
    for item in items or ():
        key, sep, values = item.partition("=")
        if not sep or key not in ONLY_KEYS or not values:
            raise ConfigError(f"--only: expected KEY=V1,V2 with KEY one of {', '.join(ONLY_KEYS)} (got {item!r})")
        only.setdefault(key, set()).update(v for v in values.split(",") if v)
    return only


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
