"""Hyperparameter search spaces in plain YAML, mapped to Ray Tune's domains and drawn by us.

A hyperparameter value that is a one-key mapping with one of these keys is a search space:

  {grid: [a, b, ...]}        every listed value (a cartesian product with the other grid keys)
  {choice: [a, b, ...]}      one of the values, drawn uniformly
  {uniform: [lo, hi]}        a float in [lo, hi)
  {loguniform: [lo, hi]}     a float in [lo, hi) with a uniform logarithm (0 < lo < hi)
  {randint: [lo, hi]}        an integer in [lo, hi) - the upper bound is excluded, as in Ray Tune

Random draws come from the sweep's `search.hparam_seed` (and the method name), never from the trial
seed, so every drawn configuration is evaluated on every seed.
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import math
from typing import Any

import numpy as np

from molere.config import ConfigError

KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
RANDOM = ("choice", "uniform", "loguniform", "randint")


def is_space(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in KINDS


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_space(space: dict, where: str) -> None:
    """Raise ConfigError naming `where` when the search space cannot be drawn from."""
    (kind, arg), = space.items()
    if kind in ("grid", "choice"):
        if not isinstance(arg, list) or not arg:
            raise ConfigError(f"{where}: {{{kind}: [...]}} needs a non-empty list of values (got {arg!r})")
        return
    if not (isinstance(arg, list) and len(arg) == 2 and all(_number(v) for v in arg)):
        raise ConfigError(f"{where}: {{{kind}: [lo, hi]}} needs two finite numbers (got {arg!r})")
    lo, hi = arg
    if not lo < hi:
        raise ConfigError(f"{where}: {{{kind}: [lo, hi]}} needs lo < hi (got {arg!r})")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}: {{loguniform: [lo, hi]}} needs 0 < lo (got {arg!r}); use uniform for ranges "
                          f"that include 0")
    if kind == "randint" and not all(isinstance(v, int) for v in arg):
        raise ConfigError(f"{where}: {{randint: [lo, hi]}} needs integers (got {arg!r})")


def tune_domain(kind: str, arg):
    """Ray Tune's search-space object for one of our YAML search spaces (its samplers, seeded by us)."""
    from ray import tune   # the search-space API only, not the executor (benchmarks.scheduler)
    if kind == "grid":
        return tune.grid_search(list(arg))
    if kind == "choice":
        return tune.choice(list(arg))
    return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](*arg)


def _rng(hparam_seed: int, method: str) -> np.random.RandomState:
    digest = hashlib.sha256(f"{hparam_seed}:{method}".encode()).digest()
    return np.random.RandomState(int.from_bytes(digest[:4], "little"))


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def expand(hparams: dict, *, method: str, hparam_seed: int, num_samples: int) -> list[dict]:
    """Every concrete hyperparameter dict of one method: grid product x `num_samples` random draws.

    Without random spaces the grid is expanded once (`num_samples` would only repeat it)."""
    for key, value in hparams.items():
        if is_space(value):
            check_space(value, f"methods.{method}.{key}")
        elif isinstance(value, dict) and len(value) == 1:
            close = difflib.get_close_matches(str(next(iter(value))), KINDS, n=1)
            if close:
                raise ConfigError(f"methods.{method}.{key}: unknown search space {next(iter(value))!r} "
                                  f"(did you mean {close[0]!r}? one of {', '.join(KINDS)})")
    grid_keys = [k for k, v in hparams.items() if is_space(v) and "grid" in v]
    rand_keys = sorted(k for k, v in hparams.items() if is_space(v) and next(iter(v)) in RANDOM)
    grid = list(itertools.product(*(hparams[k]["grid"] for k in grid_keys)))
    rng = _rng(hparam_seed, method)
    out = []
    for _ in range(num_samples if rand_keys else 1):
        draws = {}
        for k in rand_keys:
            (kind, arg), = hparams[k].items()
            draws[k] = _plain(tune_domain(kind, arg).sample(random_state=rng))
        for point in grid:
            out.append({**hparams, **dict(zip(grid_keys, point)), **draws})
    return out
