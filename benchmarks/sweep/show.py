"""A sweep's plan and its store's state as text: the `--dry-run` table, the search-space lines and the status
counts that `python -m benchmarks.run` prints. The method catalog is imported when a table is printed."""
from __future__ import annotations

import json
import sys


def _hp_text(method: str, hp: dict, width: int = 48) -> str:
    """The hyperparameters that differ from the method's defaults."""
    from benchmarks import catalog
    from molere.config import upgrade
    cls = catalog.METHODS.get(method).Hparams
    defaults = cls().model_dump(mode="json")
    hp = upgrade(cls, hp)        # a stored plan's old names (e.g. warmup_epochs) under today's
    text = json.dumps({k: v for k, v in hp.items() if k not in defaults or defaults[k] != v}, separators=(",", ":"),
                      sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


def search_lines(trials) -> list[str]:
    """One line per dataset x method: its search space (hyperparameters and train.<field>) and its draws."""
    seen: dict[tuple, tuple[dict, set]] = {}
    for t in trials:
        if not t.reference_only:
            key = (t.labels["dataset"], t.labels["method"])
            seen.setdefault(key, (t.search_space, set()))[1].add(t.labels["hparams_id"])
    out = []
    for (dataset, method), (space, draws) in seen.items():
        text = ", ".join(f"{k} ~ {json.dumps(v, separators=(',', ':'))}" for k, v in space.items()) or "none"
        out.append(f"search space ({dataset}, {method}): {text} ({len(draws)} draw{'s' * (len(draws) != 1)})")
    return out


def print_plan(trials, status: dict[str, str], out=None, sizes: bool = False,
               estimates: dict[str, str] | None = None) -> None:
    out = out or sys.stdout
    estimates = estimates or {}
    if sizes:
        from benchmarks.sweep.realised_sizes import size_lines
        for line in size_lines(trials):
            print(line, file=out)
    for line in search_lines(trials):
        print(line, file=out)
    rows = [(t.trial_id, t.labels["dataset"], t.labels["regime"], t.labels["method"], str(t.labels["seed"]),
             _hp_text(t.labels["method"], {**t.config.method.hparams,
                                           **{f"train.{k}": v for k, v in t.searched.items()}}),
             status[t.trial_id] + (" (reference)" if t.reference_only else ""), estimates.get(t.trial_id, ""))
            for t in trials]
    head = ("trial", "dataset", "regime", "method", "seed", "hparams (non-default, train.* drawn)", "status", "est.")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def counts(status: dict[str, str]) -> str:
    n = {s: sum(v == s for v in status.values()) for s in ("done", "diverged", "failed", "incomplete", "absent")}
    return (f"{len(status)} trials: {n['done']} done, " + (f"{n['diverged']} diverged, " if n["diverged"] else "")
            + f"{n['failed']} failed, {n['incomplete']} incomplete, {n['absent']} not started")
