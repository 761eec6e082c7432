"""Hyperparameter search spaces in plain YAML, mapped to Ray Tune's domains and drawn by us.

A hyperparameter value that is a one-key mapping with one of these keys is a search space:

  {grid: [a, b, ...]}        every listed value (a cartesian product with the other grid keys)
  {choice: [a, b, ...]}      one of the values, drawn uniformly
  {uniform: [lo, hi]}        a float in [lo, hi)
  {loguniform: [lo, hi]}     a float in [lo, hi) with a uniform logarithm (0 < lo < hi)
  {randint: [lo, hi]}        an integer in [lo, hi) - the upper bound is excluded, as in Ray Tune

Random draws come from the sweep's `search.hparam_seed` (and the method name), never from the trial
seed, so every drawn configuration is evaluated on every seed. Spaces of training settings (keys
`train.<field>`) draw from one stream of their own, shared by all methods: with the same space, draw k
of every method gets the same training settings (so train-twice methods reuse ERM's draw k).
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import math
from typing import Annotated, Any, Callable

import numpy as np
from pydantic import BaseModel, WrapSerializer, WrapValidator, create_model

from molere.config import ConfigError

TRAIN_PREFIX, TRAIN_STREAM = "train.", "train"   # training settings: one stream shared by every method
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
    from ray import tune   # the search-space API only, not the executor (benchmarks.sweep.scheduler)
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


def expand(hparams: dict, *, method: str, hparam_seed: int, num_samples: int,
           where: Callable[[str], str] | None = None) -> list[dict]:
    """Every concrete hyperparameter dict of one method: grid product x `num_samples` random draws.

    Without random spaces the grid is expanded once (`num_samples` would only repeat it). `where(key)`
    names a key in error messages (default `methods.<method>.<key>`)."""
    where = where or (lambda key: f"methods.{method}.{key}")
    for key, value in hparams.items():
        if is_space(value):
            check_space(value, where(key))
        elif isinstance(value, dict) and len(value) == 1:
            close = difflib.get_close_matches(str(next(iter(value))), KINDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            if close or where(key) != f"methods.{method}.{key}":
                raise ConfigError(f"{where(key)}: unknown search space {next(iter(value))!r} "
                                  f"({hint}one of {', '.join(KINDS)})")
    grid_keys = [k for k, v in hparams.items() if is_space(v) and "grid" in v]
    rand_keys = sorted(k for k, v in hparams.items() if is_space(v) and next(iter(v)) in RANDOM)
    grid = list(itertools.product(*(hparams[k]["grid"] for k in grid_keys)))
    rngs = {method: _rng(hparam_seed, method), TRAIN_STREAM: _rng(hparam_seed, TRAIN_STREAM)}
    out = []
    for _ in range(num_samples if rand_keys else 1):
        draws = {}
        for k in sorted(rand_keys, key=lambda k: k.startswith(TRAIN_PREFIX)):   # method keys first, sorted
            (kind, arg), = hparams[k].items()
            rng = rngs[TRAIN_STREAM if k.startswith(TRAIN_PREFIX) else method]
            draws[k] = _plain(tune_domain(kind, arg).sample(random_state=rng))
        for point in grid:
            out.append({**hparams, **dict(zip(grid_keys, point)), **draws})
    return out


def _space_or_value(value, handler):
    """A one-key mapping passes as a search space (checked when expanded); anything else validates as usual."""
    return value if isinstance(value, dict) and len(value) == 1 else handler(value)


def _space_or_dump(value, handler):
    return value if isinstance(value, dict) else handler(value)


def searchable(model: type[BaseModel], skip: tuple[str, ...] = ()) -> type[BaseModel]:
    """`model` with every field also accepting a search space (e.g. the sweep's `train` block)."""
    fields = {name: (Annotated[f.annotation, WrapValidator(_space_or_value), WrapSerializer(_space_or_dump)], f)
              for name, f in model.model_fields.items() if name not in skip}
    return create_model(f"Searchable{model.__name__}", __base__=model, __doc__=model.__doc__, **fields)


def spaces_of(values: dict) -> dict:
    """The entries of `values` that are search spaces."""
    return {k: v for k, v in values.items() if is_space(v)}
