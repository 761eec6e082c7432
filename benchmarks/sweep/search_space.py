"""Hyperparameter search spaces in plain YAML ({grid|choice|uniform|loguniform|randint: ...}), drawn
quasi-randomly (scipy.stats.qmc) by us. The syntax, the draws and their seeding: docs/design/search_space.md.
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
from typing import Annotated, Any, Callable

import numpy as np
from pydantic import BaseModel, WrapSerializer, WrapValidator, create_model
from scipy.stats import qmc

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


def from_unit(kind: str, arg, u: float):
    """The value of search space {kind: arg} at quantile u in [0, 1)."""
    if kind == "choice":
        return arg[min(int(u * len(arg)), len(arg) - 1)]
    lo, hi = arg
    if kind == "uniform":
        return float(lo + u * (hi - lo))
    if kind == "loguniform":
        return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
    return int(min(lo + math.floor(u * (hi - lo)), hi - 1))   # randint


def stream_seed(sweep: str, hparam_seed: int, stream: str, spaces: dict) -> int:
    """The seed of one quasi-random stream: the sweep, its hparam_seed, the stream's name and its spaces."""
    blob = json.dumps([sweep, hparam_seed, stream, spaces], sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "little")


def quasi_random(spaces: dict, n: int, seed: int) -> list[dict]:
    """`n` points of a scrambled Halton sequence over `spaces` (sorted keys = dimensions), mapped to values."""
    if not spaces or n <= 0:
        return [{} for _ in range(max(n, 0))]
    keys = sorted(spaces)
    units = qmc.Halton(d=len(keys), scramble=True, seed=np.random.default_rng(seed)).random(n)
    return [{k: from_unit(*next(iter(spaces[k].items())), float(u)) for k, u in zip(keys, row)} for row in units]


def expand(hparams: dict, *, method: str, hparam_seed: int, num_samples: int,
           where: Callable[[str], str] | None = None, base: dict | None = None, sweep: str = "") -> list[dict]:
    """Every concrete hyperparameter dict of one method: grid product x `num_samples` draws (module docstring).

    `base` gives draw 0's value of every random key (None: every draw is quasi-random). Without random
    spaces the grid is expanded once. `where(key)` names a key in error messages (default `methods.<method>.<key>`)."""
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
    rand = {k: v for k, v in hparams.items() if is_space(v) and next(iter(v)) in RANDOM}
    grid = list(itertools.product(*(hparams[k]["grid"] for k in grid_keys)))
    n = num_samples if rand else 1
    streams = [{k: v for k, v in rand.items() if k.startswith(TRAIN_PREFIX) == is_train}
               for is_train in (True, False)]
    start = 1 if base is not None and rand else 0
    points = [quasi_random(sp, n - start, stream_seed(sweep, hparam_seed, TRAIN_STREAM if i == 0 else method, sp))
              for i, sp in enumerate(streams)]
    draws = ([{k: base[k] for k in rand}] if start else []) + [{**t, **m} for t, m in zip(*points)]
    return [{**hparams, **dict(zip(grid_keys, point)), **d} for d in draws for point in grid]


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
