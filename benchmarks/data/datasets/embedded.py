"""Small datasets that ship with installed packages: sklearn digits, MNIST-1D and Fashion-MNIST.

All splits are fixed by `split_seed` (never by the trial seed), so every trial of a sweep sees the
same train/val/test examples; label regimes (noise, long tail) are applied afterwards by
`benchmarks.data.regimes`. Example ids are positions in the official train pool, followed by the test
set (offset by the pool size), so they are unique across splits and stable between runs.
"""
from __future__ import annotations

import functools
import gzip
import os
import random

import numpy as np
import torch
from pydantic import Field

from benchmarks.data.datasets.common import DataMissingError, DatasetOptions, as_float_images
from molere.registry import register_dataset
from molere.config import ConfigError
from molere.data import ExampleSet, TaskData
from molere.splits import stratified_split


class SplitOptions(DatasetOptions):
    """The fixed validation split shared by the embedded datasets."""
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the training pool held out as val (0: none)")
    split_seed: int = Field(0, ge=0, description="seed of the fixed splits (independent of the trial seed)")


def build_task(name: str, x_pool: torch.Tensor, y_pool, x_test: torch.Tensor, y_test, *, num_classes: int,
               val_fraction: float, split_seed: int, pool_ids=None, test_ids=None, standardise: bool = False,
               info: dict | None = None) -> TaskData:
    """Carve a fixed stratified val split from the training pool and wrap everything as a TaskData.

    `standardise` rescales every feature with the mean/std of the final training split.
    Ids default to pool positions, then test positions offset by the pool size.
    """
    y_pool, y_test = np.array(y_pool, dtype=np.int64), np.array(y_test, dtype=np.int64)
    pool_ids = np.arange(len(y_pool)) if pool_ids is None else np.asarray(pool_ids)
    test_ids = len(y_pool) + np.arange(len(y_test)) if test_ids is None else np.asarray(test_ids)
    if val_fraction > 0:
        tr, va = stratified_split(y_pool, val_fraction, split_seed + 1)
    else:
        tr, va = np.arange(len(y_pool)), None
    if standardise:
        mean, std = x_pool[tr].mean(0), x_pool[tr].std(0).clamp_min(1e-8)
        x_pool, x_test = (x_pool - mean) / std, (x_test - mean) / std

    def part(x, y, ids, pos):
        return ExampleSet(y[pos], x=x[torch.as_tensor(pos)], ids=ids[pos])

    train = part(x_pool, y_pool, pool_ids, tr)
    val = None if va is None else part(x_pool, y_pool, pool_ids, va)
    test = ExampleSet(y_test, x=x_test, ids=test_ids)
    return TaskData(name=name, train=train, val=val, test=test, num_classes=num_classes,
                    input_shape=tuple(x_test.shape[1:]), info=dict(info or {}))


@register_dataset("digits")
class Digits:
    """scikit-learn digits: 1797 8x8 grey images, 10 classes, fixed stratified test split."""
    needs_root = False
    input_shape = (1, 8, 8)   # known before loading (the driver checks models against it)

    class Options(SplitOptions):
        test_fraction: float = Field(0.3, gt=0, lt=1, description="share of the images held out as test")

    def __init__(self, options: Options):
        self.options = options

    def load(self, root: str | None, seed: int) -> TaskData:
        from sklearn.datasets import load_digits

        o = self.options
        d = load_digits()
        x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        pool, test = stratified_split(d.target, o.test_fraction, o.split_seed)
        return build_task("digits", x[torch.as_tensor(pool)], d.target[pool], x[torch.as_tensor(test)],
                          d.target[test], num_classes=10, val_fraction=o.val_fraction,
                          split_seed=o.split_seed, pool_ids=pool, test_ids=test)


@functools.lru_cache(maxsize=4)
def mnist1d_arrays(num_samples: int) -> tuple[np.ndarray, ...]:
    """Generate MNIST-1D locally (never `get_dataset`, which downloads); global RNG state is restored.
    Generated once per argument set and mnist1d version, then read from the disk cache (benchmarks.data.cache)."""
    import importlib.metadata

    from mnist1d.data import get_dataset_args, make_dataset

    from benchmarks.data.cache import cached_arrays

    args = get_dataset_args()
    args.num_samples = num_samples

    def make() -> dict:
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            d = make_dataset(args)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return {k: d[k] for k in ("x", "y", "x_test", "y_test")}

    key = {"args": vars(args), "mnist1d": importlib.metadata.version("mnist1d")}
    d = cached_arrays("mnist1d", key, make)
    return d["x"], d["y"], d["x_test"], d["y_test"]


@register_dataset("mnist1d")
class Mnist1D:
    """MNIST-1D: 40-dim synthetic sequences, 10 classes, generated locally (4000 train / 1000 test)."""
    needs_root = False
    input_shape = (40,)   # known before loading (the driver checks models against it)

    class Options(SplitOptions):
        num_samples: int = Field(5000, ge=100, description="examples generated in all (80% train pool, 20% test)")

    def __init__(self, options: Options):
        self.options = options

    def load(self, root: str | None, seed: int) -> TaskData:
        o = self.options
        x, y, x_test, y_test = mnist1d_arrays(o.num_samples)
        as_t = functools.partial(torch.as_tensor, dtype=torch.float32)
        return build_task("mnist1d", as_t(x.copy()), y, as_t(x_test.copy()), y_test, num_classes=10,
                          val_fraction=o.val_fraction, split_seed=o.split_seed, standardise=True)


# --- Fashion-MNIST from IDX files ---------------------------------------------------------------

FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(path: str) -> np.ndarray:
    """Parse one IDX file (unsigned-byte data, plain or gzip) into a uint8 array of its dimensions."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataMissingError(f"{path}: not an unsigned-byte IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(dims)):
        raise DataMissingError(f"{path}: IDX header announces {dims} but the file holds "
                               f"{len(raw) - start} data bytes (truncated download?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def find_idx_files(root: str | None, names=FASHION_FILES) -> tuple[list[str] | None, list[str]]:
    """(paths of the 4 files from the first folder holding all of them or None, folders searched)."""
    folders = [DEBIAN_FASHION_DIR] if root is None else [root, os.path.join(root, "FashionMNIST", "raw")]
    for folder in folders:
        found = []
        for name in names:
            hits = [p for p in (os.path.join(folder, name), os.path.join(folder, name + ".gz")) if os.path.isfile(p)]
            if not hits:
                break
            found.append(hits[0])
        else:
            return found, folders
    return None, folders


@functools.lru_cache(maxsize=2)
def _fashion_arrays(paths: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """Parsed (train images, train labels, test images, test labels), cached per process."""
    x, y, x_test, y_test = (read_idx(p) for p in paths)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or x_test.ndim != 3 or len(x_test) != len(y_test):
        raise DataMissingError(f"Fashion-MNIST files {list(paths)} have inconsistent shapes "
                               f"{x.shape}, {y.shape}, {x_test.shape}, {y_test.shape}")
    return x, y, x_test, y_test


@register_dataset("fashion_mnist")
class FashionMnist:
    """Fashion-MNIST: 28x28 grey clothing images, 10 classes, 60k train / 10k test, from IDX files."""
    needs_root = False
    input_shape = (1, 28, 28)   # known before loading (the driver checks models against it)

    class Options(SplitOptions):
        train_subset: int | None = Field(None, gt=0, description="fixed stratified subset of the training images")
        download: bool = Field(False, description="fetch the files with torchvision when missing (needs network)")

    def __init__(self, options: Options):
        self.options = options

    def _missing(self, root: str | None, folders: list[str]) -> DataMissingError:
        return DataMissingError(
            f"dataset 'fashion_mnist': IDX files ({', '.join(n + '[.gz]' for n in FASHION_FILES)}) not found "
            f"in {', '.join(folders)}; install the Debian package dataset-fashion-mnist, or put the IDX files "
            f"in {root or 'ROOT'} (dataset.root), or set download: true")

    def check(self, root: str | None) -> None:
        """Raise DataMissingError unless the files are there (or will be downloaded); reads nothing."""
        paths, folders = find_idx_files(root)
        if paths is None and not self.options.download:
            raise self._missing(root, folders)
        if paths is None and root is None:
            raise ConfigError("dataset.root: needed with download: true (the folder to download into)")

    def _paths(self, root: str | None) -> list[str]:
        self.check(root)
        paths, folders = find_idx_files(root)
        if paths is None:   # download requested (check() passed)
            from torchvision.datasets import FashionMNIST

            for train in (True, False):
                FashionMNIST(root, train=train, download=True)
            paths, folders = find_idx_files(root)
            if paths is None:
                raise self._missing(root, folders)
        return paths

    def load(self, root: str | None, seed: int) -> TaskData:
        o = self.options
        x, y, x_test, y_test = _fashion_arrays(tuple(self._paths(root)))
        pool = np.arange(len(y))
        if o.train_subset is not None:
            if o.train_subset > len(y):
                raise ConfigError(f"dataset.options.train_subset: must be at most {len(y)} (got {o.train_subset})")
            if o.train_subset < len(y):
                _, pool = stratified_split(y, o.train_subset / len(y), o.split_seed + 2)
        return build_task("fashion_mnist", as_float_images(x[pool]), y[pool], as_float_images(x_test.copy()),
                          y_test, num_classes=10, val_fraction=o.val_fraction, split_seed=o.split_seed,
                          pool_ids=pool, test_ids=len(y) + np.arange(len(y_test)))
