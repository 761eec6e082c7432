"""The train-twice Hard set without the held-out artefact: with cross-fitted ERM margins (the default)
official-val examples are as likely to be "hard" as training ones; ERM on the official train split
(`ranking: erm_on_train`) scores val held-out and over-represents it."""
import pytest
import torch

import benchmarks.catalog  # noqa: F401  (registers every method)
from benchmarks.models import build_model
from molere.config import TrainConfig
from molere.data import ExampleSet, TaskData
from molere.registry import METHODS
from molere.trainer import RunContext

D, C = 20, 4


def memorisable_task(n_train=3600, n_val=400, noise=0.15, seed=0) -> TaskData:
    """Overlapping Gaussian classes with flipped labels: ERM memorises its training examples."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(C, D, generator=g) * 0.8

    def make(n, offset):
        y_true = torch.randint(0, C, (n,), generator=g)
        x = centers[y_true] + torch.randn(n, D, generator=g)
        flip = torch.rand(n, generator=g) < noise
        y = torch.where(flip, (y_true + torch.randint(1, C, (n,), generator=g)) % C, y_true)
        return ExampleSet(y, x=x, true_labels=y_true, ids=torch.arange(n) + offset)

    return TaskData("memorisable", train=make(n_train, 0), val=make(n_val, 100_000), test=make(200, 200_000),
                    num_classes=C, input_shape=(D,))


def factory():
    return build_model("mlp", C, (D,), {"hidden": [128]})


def hard_set(task, ranking):
    cls = METHODS.get("lrw_hard")
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=25, batch_size=128, lr=0.1, weight_decay=0.0, eval_every=100)
    t = cls(factory(), task, cfg, cls.Hparams(ranking=ranking), RunContext(seed=0, model_factory=factory))
    return t.info


def test_default_hard_set_holds_official_val_at_its_base_rate():
    task = memorisable_task()
    default, old = hard_set(task, "crossfit"), hard_set(task, "erm_on_train")
    base = default["pool_official_val_share"]
    assert base == pytest.approx(0.1)
    assert abs(default["val_official_val_share"] - base) <= 0.03, default["val_official_val_share"]
    assert old["val_official_val_share"] > base + 0.03, old["val_official_val_share"]   # the artefact it removes
    assert default["ranking"] == "crossfit" and old["ranking"] == "erm_on_train"
    # both still find hard examples: far more mislabelled ones than the pool's share
    for info in (default, old):
        assert info["val_noise_fraction"] > 2 * info["pool_noise_fraction"]
        assert info["val_erm_misclassified_share"] > info["pool_erm_misclassified_share"]
