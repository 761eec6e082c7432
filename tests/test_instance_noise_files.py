"""Instance-dependent noise on a file-backed dataset (CIFAR-format fakes): the flips come from the pixels, one
streamed pass cached by content, the same image at two ids gets the same flip distribution."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from benchmarks.data import instance_noise
from benchmarks.data.datasets.files import Cifar10
from benchmarks.data.instance_noise import flip_distribution
from benchmarks.data.load import DatasetConfig, load_task
from benchmarks.data.regimes import RegimeConfig
from tests.fakes import make_fake_cifar10

PER_BATCH = 40   # make_fake_cifar10(per_class_per_batch=4): 40 images per training batch file


def _rewrite(root, name, change) -> None:
    path = os.path.join(root, "cifar-10-batches-py", name)
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    change(batch)
    with open(path, "wb") as f:
        pickle.dump(batch, f)


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    """A fake CIFAR-10 whose image 0 (batch 1) appears again as image 41 (batch 2, row 1) with its label."""
    monkeypatch.setenv("MOLERE_BENCH_CACHE", str(tmp_path / "cache"))
    root = str(tmp_path / "c")
    make_fake_cifar10(root)
    with open(os.path.join(root, "cifar-10-batches-py", "data_batch_1"), "rb") as f:
        first = pickle.load(f, encoding="bytes")

    def plant(batch):
        batch[b"data"][1] = first[b"data"][0]
        batch[b"labels"][1] = first[b"labels"][0]
    _rewrite(root, "data_batch_2", plant)
    return root


def pool(root):
    return Cifar10(Cifar10.Options(augment=False, val_fraction=0.1)).load(root, 0).pool()


def test_the_same_image_at_two_ids_gets_the_same_flip_distribution(cifar):
    ex = pool(cifar)
    q, p = flip_distribution(ex, 0.3, 10, seed=0)
    at = {int(i): k for k, i in enumerate(ex.ids.tolist())}
    a, b, other = at[0], at[PER_BATCH + 1], at[2]
    assert np.array_equal(p[a], p[b]) and q[a] == q[b]
    assert not np.array_equal(p[a], p[other])


def test_flips_depend_on_the_pixels_and_the_pass_is_cached(cifar, monkeypatch):
    ex = pool(cifar)
    q, p = flip_distribution(ex, 0.3, 10, seed=0)
    assert len(list((instance_noise.cache_dir()).glob("*.npz"))) == 1      # one streamed pass, written once
    with monkeypatch.context() as m:
        m.setattr(instance_noise, "_stream", lambda examples: pytest.fail("the cached pass was redone"))
        q2, p2 = flip_distribution(pool(cifar), 0.3, 10, seed=0)
    assert np.array_equal(q, q2) and np.array_equal(p, p2)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:                   # same labels and ids, other pixels
        _rewrite(cifar, name, lambda batch: batch.__setitem__(b"data", 255 - batch[b"data"]))
    q3, p3 = flip_distribution(pool(cifar), 0.3, 10, seed=0)
    assert len(list(instance_noise.cache_dir().glob("*.npz"))) == 2        # new content, a new cache entry
    changed = (np.abs(p3 - p).sum(1) > 0.1).mean()
    assert changed > 0.5 and not np.array_equal(q, q3)


def test_a_cifar_trial_gets_instance_noise_from_its_images(cifar):
    task = load_task(DatasetConfig(name="cifar10", root=cifar, options={"augment": False}),
                     RegimeConfig(kind="instance", rate=0.3), 0)
    noisy = (task.train.labels != task.train.true_labels).float().mean().item()
    assert 0.1 < noisy < 0.55 and task.info["val_noise_rate"] > 0 and not task.train.in_memory
