"""Everything that can be named in a run: importing this registers the built-in methods, datasets and models
in the registries of `molere.registry`."""
from __future__ import annotations

import baselines  # noqa: F401  (registers the baselines)
import molere.molere  # noqa: F401  (registers MOLERE)
from molere.registry import DATASETS, METHODS, MODELS, load_plugins

from benchmarks.data import datasets  # noqa: F401  (registers the datasets)
from benchmarks import models  # noqa: F401  (registers the models)

__all__ = ["METHODS", "DATASETS", "MODELS", "load_plugins", "import_plugins"]


def import_plugins(modules, field: str = "plugins") -> None:
    """`load_plugins`, where a module that cannot be imported (missing, a syntax error, raising) is bad input."""
    from molere.config import ConfigError
    try:
        load_plugins(modules)
    except ImportError as exc:
        text = " ".join(str(exc).split())
        raise ConfigError(f"{field}: {text[:300]}; give an importable module (on PYTHONPATH) that registers "
                          "methods, datasets or models") from None
