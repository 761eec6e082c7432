"""A store's plan grows, never shrinks: `--only` and `--set` are views of the store, not rewrites.

plan.json lists every trial any run of the sweep planned (earlier entries first, in their order; a run
adds the trials it plans that are not there yet), and sweep.yaml keeps the sweep as first written or as
last run unfiltered. A planned trial whose labels (dataset, regime, method, seed, hparams_id) equal an
earlier entry's but whose configuration differs (e.g. `--set train.epochs=2`) would put two experiments
in one report cell: a filtered run refuses it (one line, before Ray starts); an unfiltered run (the sweep
file itself was edited) replaces the earlier entry, and says so.
"""
from __future__ import annotations

import json
from pathlib import Path

from molere.config import ConfigError

LABELS = ("dataset", "regime", "method", "seed", "hparams_id")


def _key(entry: dict) -> str:
    return json.dumps([entry["labels"].get(k) for k in LABELS])


def read_plan(directory: Path) -> list[dict]:
    """The store's plan.json entries ([] when absent or unreadable: it is rewritten)."""
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
