"""Fed streams and pool passes that scale: worker-backed streams give the same batches as the main
process, a stream resumes where it stopped, a pool pass keeps O(N) scalars, a trial makes one
end-of-trial pass per split, and MOLERE's in-epoch statistics pick the split a fresh pass picks."""
from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from torch import nn

import benchmarks.data.datasets.files  # noqa: F401  (registers the datasets)
from benchmarks import catalog  # noqa: F401
from benchmarks.trial.config import TrialConfig
from benchmarks.data.load import DatasetConfig, load_task
from benchmarks.data.regimes import RegimeConfig
from molere.registry import DATASETS
from benchmarks.trial.execute import run_trial
from molere.config import TrainConfig, validate
from molere.data import ExampleSet, Loading, Stream, TaskData
from molere.registry import METHODS
from molere.splitter import choose_validation
from molere.trainer import RunContext, Trainer
from tests import fakes


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A file-backed training set with random augmentations (fake ImageNet, 3 classes x 10 images)."""
    root = fakes.make_fake_imagenet(tmp_path_factory.mktemp("imagenet"), train_per_class=10, size=20)
    cls = DATASETS.get("imagenet")
    task = cls(validate(cls.Options, {"image_size": 16}, "imagenet")).load(root, seed=0)
    assert not task.train.in_memory
    return task.train


def draw(stream: Stream, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b.x.clone(), b.idx.clone()) for b in (next(stream) for _ in range(n))]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ia, ib) for (xa, ia), (xb, ib) in zip(a, b))


def test_worker_backed_stream_yields_the_main_process_batches(images):
    n = 3 * -(-len(images) // 8) + 2          # three passes and a bit: several permutations
    seq = {}
    for workers in (0, 2):
        s = Stream(images, 8, torch.Generator().manual_seed(5), seed=11, loading=Loading(num_workers=workers))
        seq[workers] = draw(s, n)
        assert (s._feed.loader.num_workers, s._feed.loader.persistent_workers) == (
            (0, False) if workers == 0 else (2, True))
    assert same(seq[0], seq[2])
    # augmentations are random (not a constant transform): two passes over the same items differ
    other = draw(Stream(images, 8, torch.Generator().manual_seed(5), seed=12, loading=Loading()), n)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(other, seq[0])) and not same(other, seq[0])


def test_stream_resumes_where_it_stopped(images):
    gen = torch.Generator().manual_seed(1)
    s = Stream(images, 8, gen, seed=3, loading=Loading(num_workers=1))
    draw(s, 5)
    state, gen_state = s.state_dict(), gen.get_state()
    rest = draw(s, 6)
    gen2 = torch.Generator()
    gen2.set_state(gen_state)
    resumed = Stream(images, 8, gen2, seed=3, loading=Loading(num_workers=1))
    resumed.load_state_dict(state)
    assert same(draw(resumed, 6), rest)
    fresh = Stream(images, 8, gen2, seed=3, loading=Loading(num_workers=1))
    assert not same(draw(fresh, 6), rest)


def test_loading_defaults_from_the_trials_cpus():
    assert Loading.for_run(None, "cpu", cpus=8) == Loading(num_workers=7, pin_memory=False)
    assert Loading.for_run(None, "cuda", cpus=1).num_workers == 0 and Loading.for_run(None, "cuda", 4).pin_memory
    assert Loading.for_run(3, "cpu", cpus=8).num_workers == 3
    assert Loading(num_workers=8).share({"train": 128, "meta": 128}) == {"train": 4, "meta": 4}
    assert Loading(num_workers=0).share({"train": 128}) == {"train": 0}


# ---- pool passes ------------------------------------------------------------------------------------
class Recorder(nn.Module):
    """A linear classifier over many classes that keeps a weak reference to every logits tensor it returns."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.head = nn.Linear(dim, classes)
        self.outputs: list[weakref.ref] = []
        self.most_alive = 0

    def forward(self, x):
        z = self.head(x.flatten(1))
        self.most_alive = max(self.most_alive, sum(r() is not None for r in self.outputs) + 1)
        self.outputs.append(weakref.ref(z))
        return z

    def get_classifier(self):
        return self.head


def test_pool_pass_keeps_o_n_scalars_not_logits():
    n, classes = 4096, 1000
    g = torch.Generator().manual_seed(0)
    ex = ExampleSet(torch.randint(0, classes, (n,), generator=g), x=torch.randn(n, 8, generator=g))
    task = TaskData("fake", ex, ex, classes, (8,))
    model = Recorder(8, classes)
    trainer = Trainer(model, task, TrainConfig(epochs=1, num_workers=0))
    out = trainer.outputs(ex, batch_size=256)
    assert len(model.outputs) == n // 256
    assert model.most_alive <= 2                      # the previous batch's logits at most, never all of them
    assert all(r() is None for r in model.outputs)    # and none is retained
    for a in (out.ids, out.labels, out.preds, out.margins, out.observed_margins):
        assert a.shape == (n,)
    retained = sum(a.nbytes for a in (out.ids, out.labels, out.preds, out.margins, out.observed_margins))
    assert retained < n * 40 < n * classes * 4 / 20   # O(N) scalars, not N x C floats
    z = model.head(ex.x)
    assert np.array_equal(out.preds, z.argmax(1).numpy())


def trial_config(method: str, **hp) -> TrialConfig:
    return TrialConfig.model_validate({
        "dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [16]}},
        "method": {"name": method, "hparams": hp}, "train": {"epochs": 1, "batch_size": 256, "num_workers": 0}})


@pytest.mark.parametrize("method", ["erm", "lrw"])
def test_a_trial_makes_one_end_of_trial_pass_per_split(tmp_path, monkeypatch, method):
    passes = []
    real = ExampleSet.batches

    def counting(self, *args, train=True, **kw):
        if not train:
            passes.append(len(self))
        return real(self, *args, train=train, **kw)

    monkeypatch.setattr(ExampleSet, "batches", counting)
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(), 0)
    result = run_trial(trial_config(method), tmp_path / "run")
    sizes = {"train": len(task.train), "val": len(task.val), "test": len(task.test),
             "selection": len(task.selection)}
    expected = list(sizes.values())   # ERM too: its out-of-fold models are jobs of their own, when planned
    expected.append(min(TrainConfig().guard.examples, len(task.train)))   # the divergence guard's sample, per epoch
    assert sorted(passes) == sorted(expected), (passes, expected)
    assert {"test/acc", "val/acc", "train/acc_observed"} <= set(result["metrics"])
    if method == "erm":   # the pool margins come from the train and val passes, in pool order
        from benchmarks.trial.store import RunDir
        z = RunDir(tmp_path / "run").margins()
        assert np.array_equal(z["pool_ids"], np.concatenate([task.train.ids.numpy(), task.val.ids.numpy()]))
        assert len(z["pool_margins"]) == len(task.train) + len(task.val)


# ---- MOLERE's in-epoch statistics -------------------------------------------------------------------
def frozen_molere(resplit: str):
    task = load_task(DatasetConfig(name="digits"), RegimeConfig(kind="symmetric", rate=0.3), 0)
    from benchmarks.models import build_model
    torch.manual_seed(0)
    model = build_model("mlp", task.num_classes, task.input_shape, {"hidden": [32]})
    cls = METHODS.get("molere")
    hp = cls.Hparams(meta_warmup_epochs=0, resplit=resplit, w_gap=0, lambda_val=0, w_ratio=0, w_bal=0, meta_every=3,
                     splitter_init="default")   # a frozen but non-constant splitter
    t = cls(model, task, TrainConfig(epochs=2, batch_size=64, lr=0.05, num_workers=0), hp, RunContext(seed=0))
    t.optimizer.step = lambda *a, **k: None            # the classifier stays where it is (no BN in the MLP)
    return t


def test_molere_split_from_in_epoch_statistics_equals_a_fresh_pass():
    t = frozen_molere("epoch")
    passes = []
    real = t.pool_pass
    t.pool_pass = lambda examples=None: passes.append(len(examples or t.pool)) or real(examples)
    t.train_epoch()
    assert passes == [len(t.pool), len(t.meta_set)]    # the first split (nothing recorded yet), then val only
    recorded = t._cache[1].clone()
    fresh, preds, margins = real()
    assert fresh.shape == preds.shape == margins.shape == (len(t.pool),)   # O(|S|) scalars, no logits
    assert torch.allclose(recorded, fresh, atol=1e-6)
    assert recorded.std() > 0.01                       # the splitter is not constant: the test can tell
    labels = t.pool.labels if t.hp.class_balanced else None
    pick = lambda p: choose_validation(p, t.val_cap, t.hp.fill, t.hp.split_rule, labels=labels)  # noqa: E731
    assert torch.equal(pick(recorded), pick(fresh))
    t.on_epoch_start(1)                                # the next split, without a pass over the pool
    assert len(passes) == 2 and torch.equal(torch.nonzero(t.val_mask).flatten(), pick(fresh))


def test_in_epoch_statistics_are_taken_during_the_epoch():
    """Control: with a classifier that does learn, the recorded statistics differ from an end-of-epoch pass."""
    t = frozen_molere("epoch")
    del t.optimizer.step
    t.train_epoch()
    assert not torch.allclose(t._cache[1], t.pool_pass()[0], atol=1e-4)
