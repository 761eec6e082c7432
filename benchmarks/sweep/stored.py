"""A sweep's folder in the result store, read back (by the report and the dashboard): plan.json and sweep.yaml,
checked, so that a damaged or foreign file is one line of bad input (ConfigError) rather than a traceback."""
from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from molere.config import ConfigError, one_line

from benchmarks.sweep import safe_yaml
from benchmarks.sweep.safe_yaml import excerpt

REWRITE = "it is written by benchmarks.run: rerun the sweep to rewrite it"


class PlannedLabels(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset: str
    regime: str
    method: str
    seed: int
    hparams_id: str = ""


class PlanEntry(BaseModel):
    """What the readers of plan.json rely on (benchmarks.run writes more)."""
    model_config = ConfigDict(extra="allow")
    trial_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")    # a folder name under trials/
    labels: PlannedLabels
    config: dict = Field(default_factory=dict)


def sweep_folder(sweep_dir: str | os.PathLike) -> Path:
    d = Path(sweep_dir)
    if not (d / "plan.json").exists() and not (d / "plan.json").is_symlink():
        raise ConfigError(f"{d}: no plan.json (expected a sweep directory of the result store, e.g. "
                          "results/quickstart)")
    return d


def read_plan(sweep_dir: str | os.PathLike) -> list[dict]:
    """The planned trials of plan.json, each checked for the fields its readers use."""
    path = sweep_folder(sweep_dir) / "plan.json"
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({type(exc).__name__}: {excerpt(str(exc), 120)}); {REWRITE}") from None
    if not isinstance(plan, list):
        raise ConfigError(f"{path}: a list of planned trials expected (got {type(plan).__name__}); {REWRITE}")
    for i, entry in enumerate(plan):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: trial {i}: an object with trial_id and labels expected (got "
                              f"{excerpt(entry)}); {REWRITE}")
        try:
            PlanEntry.model_validate(entry)
        except ValidationError as exc:
            raise ConfigError(f"{path}: trial {i}: {one_line(exc, PlanEntry)}; {REWRITE}") from None
    return plan


def read_settings(sweep_dir: str | os.PathLike) -> dict:
    """sweep.yaml as a mapping ({} when absent), read as strictly as a sweep file."""
    path = Path(sweep_dir) / "sweep.yaml"
    if not path.exists():
        return {}
    try:
        raw = safe_yaml.load_file(path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}; {REWRITE}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: a mapping of sweep settings expected (got {type(raw).__name__}); {REWRITE}")
    raw = raw or {}
    if not isinstance(raw.get("wandb") or {}, dict):
        raise ConfigError(f"{path}: wandb: a mapping expected (got {excerpt(raw['wandb'])}); {REWRITE}")
    return raw
