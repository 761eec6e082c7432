"""A sweep's folder in the result store: plan.json and sweep.yaml read back (by the report and the dashboard)
and checked, so that a damaged or foreign file is one line of bad input (ConfigError) rather than a
traceback; and the plan a run grows.

A store's plan grows, never shrinks: `--only` and `--set` are views of the store, not rewrites. plan.json lists
every trial any run of the sweep planned (earlier entries first; a run adds the trials it plans that are not
there yet). A planned trial whose labels equal an earlier entry's but whose configuration differs (e.g.
`--set train.epochs=2`) would put two experiments in one report cell: a filtered run refuses it (one line,
before Ray starts); an unfiltered run (the sweep file itself was edited) replaces the earlier entry, and says so.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from molere.config import ConfigError, one_line

from benchmarks.sweep import safe_yaml
from benchmarks.sweep.safe_yaml import excerpt

if TYPE_CHECKING:
    from benchmarks.sweep.schema import Sweep

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


LABELS = ("dataset", "regime", "method", "seed", "hparams_id")


def _key(entry: dict) -> str:
    return json.dumps([entry["labels"].get(k) for k in LABELS])


def plan_so_far(directory: Path) -> list[dict]:
    """The store's plan.json entries for a run to grow ([] when absent or unreadable: it is rewritten)."""
    try:
        plan = json.loads((Path(directory) / "plan.json").read_text())
        return plan if isinstance(plan, list) else []
    except (OSError, ValueError):
        return []


def merge_plan(old: list[dict], new: list[dict], *, filtered: bool, where: str) -> tuple[list[dict], list[str]]:
    """(the store's new plan, notes). Raises ConfigError when a filtered run changes planned trials."""
    new_keys = {_key(e): e for e in new}
    changed = [e for e in old if _key(e) in new_keys and new_keys[_key(e)]["trial_id"] != e["trial_id"]]
    notes = []
    if changed:
        lab = changed[0]["labels"]
        example = f"{lab['method']}/{lab['dataset']}/{lab['regime']}/seed {lab['seed']}"
        if filtered:
            raise ConfigError(f"--set: changes the configuration of {len(changed)} trials already planned in {where} "
                              f"(e.g. {example}); that is another experiment: give another --results folder")
        notes.append(f"the sweep file changed the configuration of {len(changed)} planned trials (e.g. {example}); "
                     "the store's plan now lists the new ones (their old run folders stay under trials/)")
    gone = {e["trial_id"] for e in changed}
    merged = [e for e in old if e["trial_id"] not in gone]
    have = {e["trial_id"] for e in merged}
    merged += [e for e in new if e["trial_id"] not in have]
    return merged, notes


def write_plan(sweep: Sweep, trials, filtered: bool = False) -> list[str]:
    """Add `trials` to the store's plan (never removes one: see merge_plan); sweep.yaml is written by an
    unfiltered run (or when absent). Returns notes; a filtered run that would change planned trials raises
    ConfigError."""
    import yaml

    from benchmarks.atomic import atomic_write
    from benchmarks.trial.store import write_json
    d = sweep.directory
    plan, notes = merge_plan(plan_so_far(d), [t.record() for t in trials], filtered=filtered, where=str(d))
    (d / "trials").mkdir(parents=True, exist_ok=True)
    write_json(d / "plan.json", plan)
    if not filtered or not (d / "sweep.yaml").exists():
        atomic_write(d / "sweep.yaml", yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False).encode())
    return notes
