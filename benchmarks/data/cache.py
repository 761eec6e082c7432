"""A disk cache for generated data (e.g. MNIST-1D): every trial of a sweep runs in a fresh process, so an
in-process cache alone would regenerate the same arrays once per trial.

Files live in `$MOLERE_BENCH_CACHE`, else `$XDG_CACHE_HOME/molere-bench`, else `~/.cache/molere-bench`,
named by what generated them (a hash of the generator's arguments and version). Writes are atomic; an
unreadable file is regenerated; an unwritable cache folder only costs the regeneration.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np


def cache_dir() -> Path:
    env = os.environ.get("MOLERE_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "molere-bench"


def cached_arrays(name: str, key: dict, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`make()` once per `key` (JSON-able): later calls, in any process, read the arrays back from disk."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir() / f"{name}-{digest}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError):
        pass
    arrays = make()
    try:
        from benchmarks.atomic import atomic_write
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write(path, buf.getvalue())
    except OSError:
        pass
    return arrays
