"""Label regimes: noise kinds, long tail, determinism and config errors."""
import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from benchmarks.data.instance_noise import flip_distribution
from benchmarks.data.regimes import RegimeConfig, longtail_counts
from benchmarks.data.splits import apply_regime
from molere.config import ConfigError, validate
from molere.data import ExampleSet, TaskData

C = 10


def synthetic_task(n=10_000, n_test=500, dim=16, seed=0, in_memory=True):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    x = torch.randn(n, dim, generator=g) + y[:, None].float()
    if in_memory:
        train = ExampleSet(y, x=x, ids=torch.arange(n))
    else:
        train = ExampleSet(y, source=TensorDataset(x), ids=torch.arange(n))
    val = ExampleSet(y[:1000], x=x[:1000], ids=n + torch.arange(1000))
    test = ExampleSet(torch.arange(n_test) % C, x=torch.randn(n_test, dim, generator=g), ids=n + 1000 + torch.arange(n_test))
    return TaskData("synthetic", train=train, val=val, test=test, num_classes=C, input_shape=(dim,))


def regime(**kw):
    return validate(RegimeConfig, kw, prefix="regime")


def flipped(task):
    return task.train.labels != task.train.true_labels


@pytest.mark.parametrize("kind", ["symmetric", "pair", "instance"])
def test_noise_rate_true_labels_and_clean_test(kind):
    task = synthetic_task()
    out = apply_regime(task, regime(kind=kind, rate=0.3), seed=0)
    realised = flipped(out).float().mean().item()
    assert abs(realised - 0.3) <= 0.02 if kind != "instance" else abs(realised - 0.3) <= 0.03
    assert out.info["train_noise_rate"] == pytest.approx(realised)
    assert out.info["regime"]["kind"] == kind
    assert out.info["train_class_counts"] == torch.bincount(out.train.labels, minlength=C).tolist()
    truth = dict(zip(torch.cat([task.train.ids, task.val.ids]).tolist(),
                     torch.cat([task.train.labels, task.val.labels]).tolist()))
    assert [truth[i] for i in out.train.ids.tolist()] == out.train.true_labels.tolist()   # truth kept
    assert set(out.train.ids.tolist()) | set(out.val.ids.tolist()) == set(truth)       # the same pool, re-split
    assert (out.val.labels != out.val.true_labels).float().mean() > 0.2  # val noisy too (the same draw)
    assert torch.equal(out.test.labels, task.test.labels)                # test clean
    assert torch.equal(task.train.labels, task.train.true_labels)        # input task untouched


def test_symmetric_flips_to_every_other_class_uniformly():
    out = apply_regime(synthetic_task(), regime(kind="symmetric", rate=0.5), seed=1)
    y, t = out.train.labels, out.train.true_labels
    offsets = ((y - t) % C)[y != t]
    assert (offsets != 0).all()
    counts = torch.bincount(offsets, minlength=C)[1:]
    assert counts.min() > 0.8 * counts.float().mean()   # all 9 other classes, roughly evenly


def test_pair_flips_only_to_next_class():
    out = apply_regime(synthetic_task(), regime(kind="pair", rate=0.4), seed=0)
    m = flipped(out)
    assert torch.equal(out.train.labels[m], (out.train.true_labels[m] + 1) % C)


def test_instance_noise_depends_on_inputs():
    task = synthetic_task()
    kept = regime(kind="instance", rate=0.3, val="kept")
    # Two copies of the data whose inputs differ only in sign: the flip targets should change.
    neg = TaskData("neg", train=ExampleSet(task.train.labels, x=-task.train.x, ids=task.train.ids),
                   test=task.test, num_classes=C, input_shape=task.input_shape)
    a, b = apply_regime(task, kept, seed=0), apply_regime(neg, kept, seed=0)
    both = flipped(a) & flipped(b)
    assert (a.train.labels[both] != a.train.true_labels[both]).all()
    assert (a.train.labels[both] != b.train.labels[both]).float().mean() > 0.5
    # examples sharing one input per class share their flip target (a projection of x decides it)
    proto = torch.randn(C, task.train.x.shape[1], generator=torch.Generator().manual_seed(5)) * 3
    same = TaskData("same", train=ExampleSet(task.train.labels, x=proto[task.train.labels], ids=task.train.ids),
                    test=task.test, num_classes=C, input_shape=task.input_shape)
    s = apply_regime(same, kept, seed=0)
    cls0 = s.train.labels[flipped(s) & (s.train.true_labels == 0)]
    assert torch.bincount(cls0, minlength=C).max() > 0.6 * len(cls0)
    m = flipped(a)
    cls0 = a.train.labels[m & (a.train.true_labels == 0)]   # varied inputs: varied targets
    assert torch.bincount(cls0, minlength=C).max() < 0.3 * len(cls0)


def test_instance_noise_same_image_at_two_ids_same_flip_distribution():
    """synthetic_task's val holds the first 1000 training inputs again, at other ids."""
    task = synthetic_task(n=2000)
    pool = task.pool()
    q, p = flip_distribution(pool, 0.3, C, seed=4)
    first, copies = np.arange(1000), 2000 + np.arange(1000)
    assert np.array_equal(q[first], q[copies]) and np.array_equal(p[first], p[copies])
    assert np.ptp(q) > 0.2 and (p[np.arange(len(p)), pool.labels.numpy()] == 0).all()   # per example; never y
    assert not np.array_equal(flip_distribution(pool, 0.3, C, seed=5)[0], q)             # the trial seed draws


def test_instance_noise_realised_rate_is_the_requested_one_within_sampling_error():
    from scipy.stats import truncnorm
    task = synthetic_task(n=20_000)
    for rate in (0.2, 0.4):
        out = apply_regime(task, regime(kind="instance", rate=rate, val="kept"), seed=2)
        mean_q = truncnorm.mean(-rate / 0.1, (1 - rate) / 0.1, loc=rate, scale=0.1)
        se = np.sqrt(rate * (1 - rate) / len(out.train))
        assert abs(flipped(out).float().mean().item() - mean_q) < 4 * se


def test_instance_noise_on_dataset_backed_sets_reads_the_inputs():
    """A set read through a dataset gets the same flips as the same inputs held as a tensor (content, not ids)."""
    mem, backed = synthetic_task(n=2000), synthetic_task(n=2000, in_memory=False)
    kept = regime(kind="instance", rate=0.25, val="kept")
    a, b = apply_regime(mem, kept, seed=3), apply_regime(backed, kept, seed=3)
    assert not b.train.in_memory and torch.equal(a.train.labels, b.train.labels)
    assert abs(flipped(b).float().mean().item() - 0.25) <= 0.04


@pytest.mark.parametrize("imbalance", [1.0, 10.0, 100.0])
def test_longtail_counts_follow_profile_exactly(imbalance):
    task = synthetic_task()                       # 1000 per class
    out = apply_regime(task, regime(kind="longtail", imbalance=imbalance, val="kept"), seed=0)
    expected = [math.floor(1000 * imbalance ** (-c / (C - 1)) + 1e-9) for c in range(C)]
    assert out.train.class_counts(C).tolist() == expected == out.info["train_class_counts"]
    assert expected[0] == 1000 and expected[-1] == round(1000 / imbalance)
    assert out.info["imbalance_ratio"] == pytest.approx(imbalance)
    assert out.info["train_noise_rate"] == 0
    assert torch.equal(out.train.labels, out.train.true_labels)
    assert torch.equal(out.val.labels, task.val.labels) and torch.equal(out.test.labels, task.test.labels)
    assert "kept" in out.info["val_split"]
    kept = out.train.ids                          # kept examples keep their inputs and ids
    assert torch.equal(out.train.x, task.train.x[kept])


def test_longtail_over_the_pool_draws_val_after_it():
    """val: pool (default): the profile applies to train + val, then val is drawn per class with the dataset's share."""
    task = synthetic_task()                       # pool: 1100 per class, val share 1000 / 11000
    out = apply_regime(task, regime(kind="longtail", imbalance=100.0), seed=0)
    pool = out.train.class_counts(C) + out.val.class_counts(C)
    assert pool.tolist() == longtail_counts([1100] * C, 100.0)
    assert out.val.class_counts(C).tolist() == [int(round(n / 11)) for n in pool.tolist()]
    assert "follows the training distribution" in out.info["val_split"]
    assert out.info["sizes"] == {"train": len(out.train), "val": len(out.val), "selection": 0, "test": len(task.test)}


def test_longtail_profile_is_clipped_to_available_examples():
    assert longtail_counts([50, 100, 100], 4.0) == [50, 50, 25]


@pytest.mark.parametrize("kw", [dict(kind="symmetric", rate=0.2), dict(kind="instance", rate=0.2),
                                dict(kind="longtail", imbalance=20.0)])
def test_seeded_and_deterministic(kw):
    task = synthetic_task(n=2000)
    a, b = apply_regime(task, regime(**kw), 0), apply_regime(task, regime(**kw), 0)
    c = apply_regime(task, regime(**kw), 1)
    assert torch.equal(a.train.labels, b.train.labels) and torch.equal(a.train.ids, b.train.ids)
    assert not (torch.equal(a.train.labels, c.train.labels) and torch.equal(a.train.ids, c.train.ids))


def test_clean_regime_changes_no_label():
    task = synthetic_task(n=1000)
    out = apply_regime(task, RegimeConfig(), 0)
    assert torch.equal(out.train.labels, out.train.true_labels) and out.info["train_noise_rate"] == 0
    assert len(out.train) == len(task.train) and len(out.val) == len(task.val)   # the same shares
    assert "imbalance_ratio" not in out.info


@pytest.mark.parametrize("kw,pattern", [
    (dict(kind="symmetric", rate=1.0), r"^regime.rate: must be in \[0, 1\) \(got 1.0\)$"),
    (dict(kind="symmetric", rate=-0.1), r"^regime.rate: must be in \[0, 1\) \(got -0.1\)$"),
    (dict(kind="longtail", imbalance=0.5), r"^regime.imbalance: must be .*>= 1 \(got 0.5\)$"),
    (dict(kind="pair"), r"^regime.rate: pair noise needs a rate in \(0, 1\).*kind: clean"),
    (dict(rate=0.2), r"^regime.rate: kind clean takes no noise rate; use kind: symmetric"),
    (dict(kind="symmetric", rate=0.2, imbalance=10), r"^regime.imbalance: .*use kind: longtail"),
    (dict(kind="longtail", rate=0.2, imbalance=10), r"^regime.rate: kind longtail takes no noise rate"),
    (dict(kind="uniform", rate=0.2), r"^regime.kind: Input should be 'clean'"),
    (dict(noise=0.2), r"^regime.noise: unknown field"),
])
def test_bad_regime_is_one_line_error(kw, pattern):
    with pytest.raises(ConfigError, match=pattern) as exc:
        regime(**kw)
    assert "\n" not in str(exc.value)
