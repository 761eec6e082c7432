"""Shared pieces of the dataset loaders: the missing-data error and fixed, seeded splitting."""
from __future__ import annotations

import os

import numpy as np
import torch

from pydantic import Field

from molere.config import Strict

from benchmarks.data.errors import DataMissingError  # noqa: F401  (raised by every dataset module)


def cache_dir(*parts: str) -> str:
    """A folder for derived metadata outside the dataset roots (which may be read-only mounts):
    $MOLERE_CACHE, else $XDG_CACHE_HOME/molere-bench (~/.cache/molere-bench)."""
    base = os.environ.get("MOLERE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "molere-bench")
    return os.path.join(base, *parts)


def require_path(path: str | os.PathLike | None, dataset: str, how: str) -> str:
    """Return `path` if it exists, else raise DataMissingError naming it and how to get the data."""
    if path is None or not os.path.exists(path):
        raise DataMissingError(f"dataset {dataset!r}: {path or '(no root given)'} not found; {how}")
    return str(path)


def require_files(paths: list[str], dataset: str, how: str) -> None:
    """DataMissingError naming the first of `paths` (the images an annotation file lists) that is absent."""
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
        raise DataMissingError(f"dataset {dataset!r}: {absent[0]} not found ({len(absent)} of the {len(paths)} "
                               f"listed images are missing); {how}")


SELECTION_FRACTION = 0.1   # default share of the (regime's) training split held out for model selection


class DatasetOptions(Strict):
    """Options every dataset accepts (subclasses add their own)."""
    selection_fraction: float = Field(
        SELECTION_FRACTION, ge=0, le=0.5,
        description="share of the training split (per class) held out as the model-selection split, never "
                    "trained on (0: none; see docs/model_selection.md)")


def as_float_images(x: np.ndarray, scale: float = 255.0) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) -> float tensor (N, C, H, W) in [0, 1]."""
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32) / scale
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif t.ndim == 4 and t.shape[-1] in (1, 3):
        t = t.permute(0, 3, 1, 2).contiguous()
    return t
