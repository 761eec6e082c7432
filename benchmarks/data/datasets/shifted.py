"""MNIST-1D with a covariate-shifted test set: the CPU-scale stand-in for the paper's OOD test sets (Figure 2)
and, with `val_source: shifted`, for a natural hard validation set (Table 4's ImageNet-R / -A halves)."""
from __future__ import annotations

import functools
import random
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from benchmarks.data.datasets.embedded import SplitOptions, mnist1d_arrays, build_task
from molere.registry import register_dataset
from molere.data import ExampleSet, TaskData
from molere.splits import stratified_split

SHIFT_SEED = 4242          # the shifted draw's generator seed (the standard MNIST-1D draw uses 42)


@functools.lru_cache(maxsize=4)
def shifted_arrays(num_samples: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """A second MNIST-1D draw whose correlated / i.i.d. noise and shear are `shift` times the standard ones."""
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, SHIFT_SEED
    args.corr_noise_scale *= shift
    args.iid_noise_scale *= shift
    args.shear_scale *= shift
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return np.concatenate([d["x"], d["x_test"]]), np.concatenate([d["y"], d["y_test"]])


@register_dataset("mnist1d_shift")
class Mnist1DShift:
    """MNIST-1D (as `mnist1d`) plus an extra test set `shifted`: another generator draw with `shift` times the
    noise and shear (a covariate shift); `val_source: shifted` makes half of it the validation split."""
    needs_root = False
    input_shape = (40,)

    class Options(SplitOptions):
        num_samples: int = Field(5000, ge=100, description="in-distribution examples (80% train pool, 20% test)")
        shift_samples: int = Field(2000, ge=100, description="examples of the shifted draw")
        shift: float = Field(2.5, ge=1, description="factor on the noise and shear scales of the shifted draw")
        val_source: Literal["id", "shifted"] = Field(
            "id", description="id: val held out of the training pool; shifted: a stratified part of the shifted "
                              "set is the validation split, the rest stays the shifted test")
        val_source_fraction: float = Field(0.5, gt=0, lt=1, description="share of the shifted set used as val")

    def __init__(self, options: Options):
        self.options = options

    def load(self, root: str | None, seed: int) -> TaskData:
        o = self.options
        x, y, x_test, y_test = mnist1d_arrays(o.num_samples)
        as_t = functools.partial(torch.as_tensor, dtype=torch.float32)
        task = build_task("mnist1d_shift", as_t(x.copy()), y, as_t(x_test.copy()), y_test, num_classes=10,
                          val_fraction=o.val_fraction if o.val_source == "id" else 0.0, split_seed=o.split_seed)
        mean, std = task.train.x.mean(0), task.train.x.std(0).clamp_min(1e-8)   # the training split's statistics
        for part in (task.train, task.val, task.test):
            if part is not None:
                part.x = (part.x - mean) / std
        xs, ys = shifted_arrays(o.shift_samples, o.shift)
        offset = len(y) + len(y_test)
        shifted = ExampleSet(ys, x=(as_t(xs) - mean) / std, ids=offset + np.arange(len(ys)))
        val = task.val
        if o.val_source == "shifted":
            rest, held = stratified_split(ys, o.val_source_fraction, o.split_seed)
            shifted, val = shifted.subset(rest), shifted.subset(held)
        return TaskData("mnist1d_shift", task.train, task.test, 10, (40,), val=val, extra_tests={"shifted": shifted},
                        info={"shift": o.shift, "val_source": o.val_source})
