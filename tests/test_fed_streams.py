"""Fed GPUs: a trial's loader workers are split over its concurrent streams by what each decodes per step,
within the trial's budget, and image batches travel as uint8 and are normalised on arrival to exactly the
values the float pipeline gives."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import benchmarks.data.datasets.files  # noqa: F401  (registers the datasets)
from benchmarks import catalog  # noqa: F401  (registers the methods)
from benchmarks.data.datasets.images import ImageFiles, make_transforms, uint8_tail
from benchmarks.data.load import DatasetConfig, load_task
from benchmarks.data.regimes import RegimeConfig
from benchmarks.models import build_model
from molere.config import TrainConfig
from molere.data import Batch, Loading, Stream
from molere.registry import METHODS
from molere.trainer import RunContext
from tests import fakes


def test_share_follows_demand_and_stays_within_the_budget():
    lo = Loading(num_workers=7)
    assert lo.share({"train": 128, "meta": 128}) == {"train": 4, "meta": 3}   # MWN, L2RW: a meta batch every step
    lrw = lo.share({"train": 128, "meta": 128 / 5})               # LRW: a meta batch every Q = 5 steps
    assert lrw == {"train": 6, "meta": 1}
    molere = lo.share({"train": 128, "meta": 25.6, "splitter_pool": 25.6, "splitter_val": 25.6})
    assert sum(molere.values()) == 7 and min(molere.values()) == 1 and molere["train"] == 4
    assert Loading(num_workers=2).share({"train": 128, "meta": 10, "other": 5}) == {"train": 1, "meta": 1, "other": 0}
    assert Loading(num_workers=0).share({"train": 128, "meta": 100}) == {"train": 0, "meta": 0}
    for n in range(1, 20):                                       # the whole budget, never more
        for demand in ({"a": 1, "b": 1000}, {"a": 3, "b": 3, "c": 3}, {"a": 100}):
            got = Loading(num_workers=n).share(demand)
            assert sum(got.values()) == n and (n < len(demand) or min(got.values()) >= 1), (n, demand, got)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = fakes.make_fake_imagenet(tmp_path_factory.mktemp("in"), train_per_class=6, val_per_class=2, size=20)
    return load_task(DatasetConfig(name="imagenet", root=root, options={"image_size": 16, "val_fraction": 0.2}),
                     RegimeConfig(), 0)


@pytest.mark.parametrize("method,expected", [
    ("erm", {"train": 7}), ("mwn", {"train": 4, "meta": 3}), ("lrw", {"train": 6, "meta": 1}),
    ("molere", {"train": 4, "meta": 1, "splitter_pool": 1, "splitter_val": 1})])
def test_each_methods_streams_share_the_trials_workers(imagenet, method, expected):
    cls = METHODS.get(method)
    model = build_model("mlp", imagenet.num_classes, imagenet.input_shape, {"hidden": [4]})
    hp = cls.Hparams(**({"meta_batch_size": 128} if "meta_batch_size" in cls.Hparams.model_fields else {}))
    t = cls(model, imagenet, TrainConfig(epochs=1, batch_size=128), hp, RunContext(cpus=8))
    assert t.stream_demand().keys() == expected.keys()
    got = {k: t.stream(k, "train_set", 4).workers for k in expected}   # streams are built lazily: no loader yet
    assert got == expected and sum(got.values()) <= t.loading.num_workers == 7


def eval_items(task, positions):
    """The float pipeline as it was: the dataset's eval transform (ToTensor + Normalize) per image file."""
    _, eval_tf = make_transforms("crop", 16, True)
    src = task.test.eval_source
    return torch.stack([eval_tf(Image.open(str(src.paths[p]))) for p in positions])


def test_uint8_batches_are_normalised_on_arrival_to_the_float_pipelines_values(imagenet):
    task = imagenet
    b = next(task.test.batches(5, train=False, loading=Loading(num_workers=1)))
    assert b.x.dtype == torch.uint8 and b.normalize is not None       # a quarter of the bytes in shared memory
    moved = b.to("cpu")
    assert moved.x.dtype == torch.float32 and moved.normalize is None
    assert torch.equal(moved.x, eval_items(task, task.test.positions[b.idx.numpy()]))
    # the training stream (random crops, seeded per pass and position) gives the same values as float items
    s = Stream(task.train, 4, torch.Generator().manual_seed(0), seed=3, loading=Loading(num_workers=0))
    u8 = next(s)
    float_src = ImageFiles(list(task.train.source.paths), make_transforms("crop", 16, True)[0])
    float_src.transform, float_src.normalize = make_transforms("crop", 16, True)[0], None   # the old pipeline
    task.train.source, saved = float_src, task.train.source
    try:
        s2 = Stream(task.train, 4, torch.Generator().manual_seed(0), seed=3, loading=Loading(num_workers=0))
        ref = next(s2)
    finally:
        task.train.source = saved
    assert ref.x.dtype == torch.float32 and ref.normalize is None
    assert torch.equal(u8.to("cpu").x, ref.x)


def test_pipelines_that_do_not_end_in_normalize_stay_float():
    tf = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3), T.RandomErasing(p=1.0)])
    assert uint8_tail(tf) == (tf, None)
    keep, stats = uint8_tail(make_transforms("resize", 8, False)[1])
    assert stats == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) and isinstance(keep.transforms[-1], T.PILToTensor)
    x = torch.zeros(2, 3, 1, 1, dtype=torch.uint8)
    assert torch.allclose(Batch(x, x, x, x, stats).to("cpu").x[0, :, 0, 0], -torch.tensor(stats[0]) / torch.tensor(stats[1]))
    assert np.allclose(Batch(x, x, x, x).to("cpu").x.numpy(), 0)     # no (mean, std): untouched
