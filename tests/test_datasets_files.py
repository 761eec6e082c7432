"""The on-disk loaders (CIFAR, ImageNet, Clothing-1M, WILDS) on tiny fakes in the real formats."""
import os
import pickle

import numpy as np
import pytest
import torch

import benchmarks.data.datasets.files  # noqa: F401  (registers the datasets)
import benchmarks.data.datasets.wilds_data  # noqa: F401
from benchmarks.data.datasets.common import DataMissingError
from benchmarks.data.datasets.images import CIFAR_MEAN, CIFAR_STD
from molere.registry import DATASETS
from molere.config import ConfigError, validate
from molere.data import normalized
from tests import fakes


def loader(name, **options):
    cls = DATASETS.get(name)
    assert cls.needs_root
    return cls(validate(cls.Options, options, name))


def check_task(task, sizes: dict, batch=4):
    """Split sizes, ids unique across every split, and one train and one eval batch of the right shape."""
    splits = {"train": task.train, **task.eval_splits()}
    assert {k: len(v) for k, v in splits.items()} == sizes
    ids = torch.cat([s.ids for s in splits.values()])
    assert len(torch.unique(ids)) == len(ids)
    gen = torch.Generator().manual_seed(0)
    b = next(task.train.batches(batch, shuffle=True, generator=gen)).to("cpu")   # image files: uint8 until here
    assert b.x.shape == (batch, *task.input_shape) and b.x.dtype == torch.float32
    assert b.y.shape == (batch,) and int(b.y.max()) < task.num_classes
    e = next(task.test.batches(batch, train=False))
    assert e.x.shape == (min(batch, len(task.test)), *task.input_shape)


# ---- CIFAR -------------------------------------------------------------------------------------------
def _cifar_arrays(d, files, key):
    xs, ys = [], []
    for f in files:
        with open(os.path.join(d, f), "rb") as fh:
            b = pickle.load(fh, encoding="bytes")
        xs.append(b[b"data"])
        ys += b[key]
    return np.concatenate(xs), np.asarray(ys)


def test_cifar10_splits_labels_and_pixels(tmp_path):
    d = fakes.make_fake_cifar10(tmp_path)       # 5 x 40 train, 20 test
    task = loader("cifar10", augment=False).load(str(tmp_path), seed=3)
    assert task.num_classes == 10 and task.input_shape == (3, 32, 32) and task.info["classes"][3] == "class3"
    check_task(task, {"train": 180, "val": 20, "test": 20})
    assert (task.val.class_counts(10) == 2).all()         # stratified 10% hold-out
    x, y = _cifar_arrays(d, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels")
    for s in (task.train, task.val, task.test):
        assert torch.equal(s.labels, torch.as_tensor(y[s.ids.numpy()]))
    assert int(task.test.ids.min()) == 200               # test ids follow the train ids
    # pixel layout: eval item of the first test image equals its normalised raw row
    raw = torch.as_tensor(x[200].reshape(3, 32, 32), dtype=torch.float32) / 255
    expect = (raw - torch.tensor(CIFAR_MEAN)[:, None, None]) / torch.tensor(CIFAR_STD)[:, None, None]
    src = task.test.eval_source                          # uint8 item, normalised on arrival (molere.data)
    got = normalized(src[200][0][None], *src.normalize)[0]
    assert src[200][0].dtype == torch.uint8 and torch.allclose(got, expect, atol=1e-5)


def test_cifar_val_split_is_fixed_and_augment_changes_train_view(tmp_path):
    fakes.make_fake_cifar10(tmp_path)
    a = loader("cifar10").load(str(tmp_path), seed=0)
    b = loader("cifar10").load(str(tmp_path), seed=1)
    c = loader("cifar10", split_seed=5).load(str(tmp_path), seed=0)
    assert torch.equal(a.val.ids, b.val.ids) and not torch.equal(a.val.ids, c.val.ids)
    torch.manual_seed(0)
    views = torch.stack([a.train.source[0][0] for _ in range(8)])
    assert (views - views[0]).abs().amax() > 0            # pad-crop/flip: random views differ
    assert torch.equal(a.train.eval_source[0][0], a.train.eval_source[0][0])


def test_cifar100_and_resized_images(tmp_path):
    d = fakes.make_fake_cifar100(tmp_path)      # 500 train, 100 test
    task = loader("cifar100", image_size=16, val_fraction=0.2).load(str(tmp_path), seed=0)
    assert task.num_classes == 100 and task.input_shape == (3, 16, 16)
    check_task(task, {"train": 400, "val": 100, "test": 100})
    _, y = _cifar_arrays(d, ["train", "test"], b"fine_labels")
    assert torch.equal(task.train.labels, torch.as_tensor(y[task.train.ids.numpy()]))


def test_cifar_missing_data(tmp_path):
    with pytest.raises(DataMissingError, match="no root given"):
        loader("cifar10").check(None)
    with pytest.raises(DataMissingError, match="cs.toronto.edu"):
        loader("cifar10").load(str(tmp_path / "nowhere"), seed=0)
    d = fakes.make_fake_cifar10(tmp_path)
    os.remove(os.path.join(d, "data_batch_3"))
    with pytest.raises(DataMissingError, match=r"data_batch_3.*download: true"):
        loader("cifar10").check(str(tmp_path))
    with pytest.raises(DataMissingError, match="cifar-100-python"):
        loader("cifar100").load(str(tmp_path), seed=0)


# ---- ImageNet ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    fakes.make_fake_imagenet(root / "in1k")           # 3 classes x (10 train, 2 val)
    r = fakes.make_image_folder(root / "imagenet_r", {fakes.WNIDS[2]: 4, fakes.WNIDS[0]: 4}, seed=2)
    return str(root / "in1k"), r


def test_imagenet_with_extra_test(imagenet):
    root, r = imagenet
    task = loader("imagenet", image_size=16, val_fraction=0.1, extra_tests={"imagenet_r": r}).load(root, 0)
    assert task.num_classes == 3 and task.info["classes"] == list(fakes.WNIDS)
    check_task(task, {"train": 27, "val": 3, "test": 6, "imagenet_r": 8})
    assert task.test.class_counts(3).tolist() == [2, 2, 2]
    # extra-set labels are ImageNet indices by wnid, not the folder's own order
    assert task.extra_tests["imagenet_r"].class_counts(3).tolist() == [4, 0, 4]
    src = task.extra_tests["imagenet_r"].source
    for lab, p in zip(task.extra_tests["imagenet_r"].labels, task.extra_tests["imagenet_r"].positions):
        assert os.path.basename(os.path.dirname(src.paths[p])) == fakes.WNIDS[int(lab)]


def test_imagenet_val_source_partitions_the_extra_set(imagenet):
    root, r = imagenet
    opts = dict(image_size=16, extra_tests={"imagenet_r": r}, val_source="imagenet_r")
    task = loader("imagenet", **opts).load(root, 0)
    check_task(task, {"train": 30, "val": 4, "test": 6, "imagenet_r": 4})
    assert task.val.class_counts(3).tolist() == [2, 0, 2]
    again = loader("imagenet", **opts).load(root, 7)
    assert torch.equal(task.val.ids, again.val.ids)       # fixed partition, independent of the trial seed


def test_imagenet_bad_input(imagenet, tmp_path):
    root, r = imagenet
    with pytest.raises(ConfigError, match="val_source"):
        loader("imagenet", val_source="imagenet_a")
    with pytest.raises(DataMissingError, match="imagenet_a"):
        loader("imagenet", extra_tests={"imagenet_a": str(tmp_path / "imagenet_a")}).check(root)
    with pytest.raises(DataMissingError, match=r"nothere not found.*image-net.org.*nothere/train"):
        loader("imagenet").check(str(tmp_path / "nothere"))
    fakes.make_image_folder(tmp_path / "odd", {"n99999999": 1})
    with pytest.raises(ConfigError, match="n99999999"):
        loader("imagenet", extra_tests={"odd": str(tmp_path / "odd")}).load(root, 0)


# ---- Clothing-1M -------------------------------------------------------------------------------------
def test_clothing1m(tmp_path):
    n = fakes.make_fake_clothing1m(tmp_path)      # 28 train (14 with clean labels), 14 val, 14 test
    task = loader("clothing1m", image_size=16).load(str(tmp_path), 0)
    assert task.num_classes == 14
    check_task(task, {"train": n["train"], "val": n["val"], "test": n["test"]})
    assert task.info["train_known_clean"] == 14 and task.info["noise_rate_known_clean"] == 0.0
    tr = task.train
    # every second train image has a noisy label, and no clean one, so y_true falls back to it
    assert int((tr.labels != tr.true_labels).sum()) == 0
    assert tr.class_counts(14).tolist() == [2] * 14
    assert torch.equal(task.val.labels, torch.arange(14)) and torch.equal(task.test.labels, torch.arange(14))
    sub = loader("clothing1m", image_size=16, train_subset=10).load(str(tmp_path), 0)
    assert len(sub.train) == 10 and set(sub.train.ids.tolist()) <= set(tr.ids.tolist())
    assert torch.equal(sub.test.ids, task.test.ids)


def test_clothing1m_noisy_labels_and_missing(tmp_path):
    fakes.make_fake_clothing1m(tmp_path)
    ann = tmp_path / "annotations"
    first = (ann / "noisy_train_key_list.txt").read_text().split()[0]
    kv = (ann / "noisy_label_kv.txt").read_text().replace(f"{first} 0\n", f"{first} 5\n")
    (ann / "noisy_label_kv.txt").write_text(kv)
    task = loader("clothing1m", image_size=16).load(str(tmp_path), 0)
    i = int(torch.nonzero(task.train.labels != task.train.true_labels)[0, 0])
    assert (int(task.train.labels[i]), int(task.train.true_labels[i])) == (5, 0)
    assert task.info["noise_rate_known_clean"] == pytest.approx(1 / 14)
    os.remove(ann / "clean_test_key_list.txt")
    with pytest.raises(DataMissingError, match="clean_test_key_list.txt"):
        loader("clothing1m").load(str(tmp_path), 0)


# ---- WILDS -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wilds_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("wilds")
    fakes.make_fake_camelyon17(root)
    fakes.make_fake_waterbirds(root)
    fakes.make_fake_iwildcam(root)
    return str(root)


def test_camelyon17(wilds_root):
    task = loader("camelyon17", image_size=32).load(wilds_root, 0)
    check_task(task, {"train": 21, "val": 8, "test": 8, "id_val": 3})
    assert task.num_classes == 2 and task.info["group_by"] == ["slide"]
    assert task.test.metadata[:, 0].unique().tolist() == [2]          # hospital 2 is the OOD test
    assert task.val.metadata[:, 0].unique().tolist() == [1]
    assert torch.equal(task.test.groups, task.test.metadata[:, 1])   # groups = slides
    good = task.evaluator("test", task.test.true_labels, task.test)
    bad = task.evaluator("test", 1 - task.test.true_labels, task.test)
    assert good["acc_avg"] == 1.0 and good["acc_wg"] == 1.0 and bad["acc_avg"] == 0.0
    assert all(isinstance(v, float) for v in good.values())
    swapped = loader("camelyon17", image_size=32, val_split="id_val").load(wilds_root, 0)
    assert len(swapped.val) == 3 and len(swapped.extra_tests["ood_val"]) == 8


def test_waterbirds_groups_and_official_eval(wilds_root):
    task = loader("waterbirds", image_size=32).load(wilds_root, 0)
    check_task(task, {"train": 12, "val": 12, "test": 12})
    assert task.train.groups.unique().numel() == 4 and task.info["n_groups"] == 4
    y, g = task.test.true_labels, task.test.groups
    preds = y.clone()
    worst = g == g[0]
    preds[worst] = 1 - preds[worst]                              # one group entirely wrong
    res = task.evaluator("test", preds, task.test)
    assert res["acc_wg"] == 0.0 and 0.0 < res["adj_acc_avg"] < 1.0
    logits = torch.nn.functional.one_hot(y, 2).float()
    assert task.evaluator("test", logits, task.test)["acc_wg"] == 1.0


def test_iwildcam(wilds_root):
    task = loader("iwildcam", image_size=16).load(wilds_root, 0)
    check_task(task, {"train": 6, "val": 3, "test": 3, "id_val": 3, "id_test": 3})
    assert task.num_classes == 3
    res = task.evaluator("test", task.test.true_labels, task.test)
    assert res["acc_avg"] == 1.0 and res["F1-macro_all"] == 1.0


def test_wilds_bad_input(wilds_root, tmp_path):
    with pytest.raises(DataMissingError, match=r"nowhere.*download=True"):
        loader("camelyon17").check(str(tmp_path / "nowhere"))
    with pytest.raises(DataMissingError, match=r"camelyon17_v1.0.*RELEASE_v1.0.txt"):
        loader("camelyon17").load(str(tmp_path), 0)
    assert not os.listdir(tmp_path)                               # wilds was never asked to create it
    with pytest.raises(ConfigError, match="val_split"):
        loader("waterbirds", val_split="id_val").load(wilds_root, 0)
