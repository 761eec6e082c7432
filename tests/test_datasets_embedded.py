"""Embedded datasets (digits, MNIST-1D, Fashion-MNIST from IDX files) and the task entry point."""
import gzip
import os

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from benchmarks.data.load import DatasetConfig, check_dataset, load_task
from benchmarks.data.datasets.common import DataMissingError
from benchmarks.data.datasets.embedded import read_idx
from benchmarks.data.regimes import RegimeConfig
from molere.config import ConfigError
from molere.registry import UnknownNameError
from tests.optional_data import needs_fashion_mnist

CLEAN = RegimeConfig()


def all_ids(task):
    return torch.cat([task.train.ids, task.selection.ids, task.val.ids, task.test.ids])


def n_train(task):
    """Training examples the dataset provides: the training split plus the selection split carved from it."""
    return len(task.train) + len(task.selection)


@pytest.mark.parametrize("name,shape,n_total", [("digits", (1, 8, 8), 1797), ("mnist1d", (40,), 5000)])
def test_embedded_shapes_fixed_test_and_unique_ids(name, shape, n_total):
    a = load_task(DatasetConfig(name=name), CLEAN, seed=0)
    b = load_task(DatasetConfig(name=name), CLEAN, seed=7)
    assert a.input_shape == shape and tuple(a.train.x.shape[1:]) == shape
    assert a.num_classes == 10 and a.train.x.dtype == torch.float32
    assert n_train(a) + len(a.val) + len(a.test) == n_total
    ids = all_ids(a)
    assert len(torch.unique(ids)) == len(ids)
    # splits are fixed by split_seed, not the trial seed
    assert torch.equal(a.test.ids, b.test.ids) and torch.equal(a.test.x, b.test.x)
    assert torch.equal(a.val.ids, b.val.ids) and torch.equal(a.train.ids, b.train.ids)
    assert torch.equal(a.selection.ids, b.selection.ids)
    other = load_task(DatasetConfig(name=name, options={"split_seed": 1}), CLEAN, seed=0)
    assert not torch.equal(other.val.ids, a.val.ids)


def test_digits_scaling_and_stratified_fractions():
    task = load_task(DatasetConfig(name="digits", options={"test_fraction": 0.5, "val_fraction": 0}), CLEAN, 0)
    assert task.val is None
    assert float(task.train.x.min()) == 0.0 and float(task.train.x.max()) == 1.0
    full = np.bincount(load_digits().target, minlength=10)
    assert task.test.class_counts(10).tolist() == np.round(full * 0.5).astype(int).tolist()   # stratified


def test_mnist1d_official_test_and_train_standardisation():
    task = load_task(DatasetConfig(name="mnist1d"), CLEAN, 0)
    assert len(task.test) == 1000 and n_train(task) + len(task.val) == 4000
    from benchmarks.data.datasets.embedded import Mnist1D
    x = Mnist1D(Mnist1D.Options()).load(None, 0).train.x   # the dataset's own training split (before pooling)
    assert torch.allclose(x.mean(0), torch.zeros(40), atol=1e-4)
    assert torch.allclose(x.std(0), torch.ones(40), atol=1e-3)
    assert set(task.test.ids.tolist()) == set(range(4000, 5000))


def test_mnist1d_leaves_global_rng_alone():
    from benchmarks.data.datasets.embedded import mnist1d_arrays

    mnist1d_arrays.cache_clear()
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    load_task(DatasetConfig(name="mnist1d", options={"num_samples": 1000}), CLEAN, 0)
    assert np.random.rand() == expected


def write_idx(path, array, gz=True):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.tobytes())


def fake_fashion(folder, n_train=200, n_test=50, gz=True):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    sfx = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_train, 28, 28)), gz)
    write_idx(folder / f"train-labels-idx1-ubyte{sfx}", np.arange(n_train) % 10, gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_test, 28, 28)), gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{sfx}", np.arange(n_test) % 10, gz)


@pytest.mark.parametrize("layout", ["root", "torchvision", "plain"])
def test_fashion_mnist_from_idx_files(tmp_path, layout):
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    fake_fashion(folder, gz=layout != "plain")
    cfg = DatasetConfig(name="fashion_mnist", root=str(tmp_path), options={"train_subset": 100})
    check_dataset(cfg)
    task = load_task(cfg, CLEAN, 0)
    assert task.input_shape == (1, 28, 28) and len(task.test) == 50
    assert n_train(task) == 90 and len(task.val) == 10
    assert 0 <= float(task.train.x.min()) and float(task.train.x.max()) <= 1 and task.train.x.max() > 0.9
    ids = all_ids(task)
    assert len(torch.unique(ids)) == len(ids) and task.test.ids.min() == 200
    # images keep their labels: the raw file bytes at a train id match the tensor
    raw = read_idx(str(next(folder.glob("train-images*"))))
    i = int(task.train.ids[3])
    assert torch.allclose(task.train.x[3, 0] * 255, torch.as_tensor(raw[i].copy(), dtype=torch.float32))
    assert int(task.train.labels[3]) == i % 10


def test_fashion_mnist_missing_root_names_paths(tmp_path):
    cfg = DatasetConfig(name="fashion_mnist", root=str(tmp_path / "nowhere"))
    with pytest.raises(DataMissingError, match="nowhere.*dataset-fashion-mnist.*download: true"):
        check_dataset(cfg)
    with pytest.raises(DataMissingError, match=str(tmp_path / "nowhere" / "FashionMNIST" / "raw")):
        load_task(cfg, CLEAN, 0)


def test_bad_idx_file_is_reported(tmp_path):
    fake_fashion(tmp_path)
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 0x08, 1]) + (500).to_bytes(4, "big") + b"\0" * 10)   # truncated
    with pytest.raises(DataMissingError, match="train-labels.*truncated"):
        load_task(DatasetConfig(name="fashion_mnist", root=str(tmp_path)), CLEAN, 0)
    with open(tmp_path / "x.idx", "wb") as f:
        f.write(bytes([8, 3, 0, 0]))
    with pytest.raises(DataMissingError, match="magic"):
        read_idx(str(tmp_path / "x.idx"))


@needs_fashion_mnist
def test_fashion_mnist_debian_copy():
    task = load_task(DatasetConfig(name="fashion_mnist", options={"train_subset": 1000}), CLEAN, 0)
    assert n_train(task) + len(task.val) == 1000 and len(task.test) == 10000
    assert (task.train.class_counts(10) + task.selection.class_counts(10) + task.val.class_counts(10)).tolist() \
        == [100] * 10 and task.selection.class_counts(10).tolist() == [10] * 10
    assert task.test.class_counts(10).tolist() == [1000] * 10
    assert 0.2 < float(task.test.x.mean()) < 0.4


def test_bad_dataset_config():
    with pytest.raises(UnknownNameError,
                       match="unknown dataset 'digitz'; did you mean 'digits'\\? known: .*digits.*mnist1d"):
        check_dataset(DatasetConfig(name="digitz"))
    with pytest.raises(ConfigError, match=r"^dataset.options.val_frac: unknown field"):
        check_dataset(DatasetConfig(name="digits", options={"val_frac": 0.2}))
    with pytest.raises(ConfigError, match=r"^dataset.options.test_fraction: .*\(got 1.5\)$"):
        load_task(DatasetConfig(name="digits", options={"test_fraction": 1.5}), CLEAN, 0)
