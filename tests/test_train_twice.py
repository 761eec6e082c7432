"""Train-twice baselines: the validation set is exactly the selected δ fraction of the ERM ranking,
the controls train on the same split, and one ERM pass serves every variant."""
import numpy as np
import pytest
import torch

from baselines.train_twice import select_validation
from benchmarks.trial.config import TrialConfig, erm_reference_config, resolve, trial_id
from benchmarks.models import build_model
from benchmarks.train import main as train_main
from benchmarks.trial.execute import run_trial
from benchmarks.trial.reference import oof_dir, run_fold
from molere.config import ConfigError, TrainConfig
from molere.data import ExampleSet, TaskData
from molere.reference import ReferenceMargins
from molere.registry import METHODS
from molere.trainer import RunContext

DELTA = 0.1


def tiny_task(n=200, classes=4, seed=0, noisy=0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, 1, 6, 6, generator=g) * 2

    def make(m, offset):
        y_true = torch.arange(m) % classes
        x = centers[y_true] + torch.randn(m, 1, 6, 6, generator=g)
        y = y_true.clone()
        y[:noisy] = (y[:noisy] + 1) % classes
        return ExampleSet(y, x=x, true_labels=y_true, ids=torch.arange(m) * 3 + offset)   # ids != positions

    return TaskData("tiny", train=make(n, 1), val=make(n // 4, 2), test=make(n // 4, 10_000),
                    num_classes=classes, input_shape=(1, 6, 6))


def factory():
    return build_model("mlp", 4, (1, 6, 6), {"hidden": [16]})


class FixedReference:
    """A stored reference (`molere.reference.Reference`) with fixed margins for the pooled ids; counts the calls."""

    def __init__(self, ids, margins):
        self.ids, self.margins, self.calls = ids, margins, 0

    def pool_margins(self):
        self.calls += 1
        return ReferenceMargins(self.ids, self.margins)

    def oof_margins(self, folds):   # the same fixed margins for the default (crossfit) ranking
        return self.pool_margins()

    def test_outputs(self):
        return None


def pool_ids(task):
    return np.concatenate([task.train.ids.numpy(), task.val.ids.numpy()])


def make(name, task, reference, seed=0, hparams=None, epochs=1):
    cls = METHODS.get(name)
    torch.manual_seed(seed)
    return cls(factory(), task, TrainConfig(epochs=epochs, batch_size=32, lr=0.05), cls.Hparams(**(hparams or {})),
               RunContext(seed=seed, model_factory=factory, reference=reference))


@pytest.fixture
def fixed():
    task = tiny_task(noisy=10)
    ids = pool_ids(task)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(ids))               # provider order differs from pool order
    margins = rng.uniform(-1, 1, len(ids))          # distinct margins: argsort is unambiguous
    return task, FixedReference(ids[order], margins[order]), dict(zip(ids.tolist(), margins.tolist()))


def test_hard_and_easy_are_the_lowest_and_highest_margin_fraction(fixed):
    task, ref, by_id = fixed
    ids = np.array(sorted(by_id))
    m = np.array([by_id[i] for i in ids])
    k = round(DELTA * len(ids))
    expected = {"lrw_hard": set(ids[np.argsort(m)[:k]]), "lrw_easy": set(ids[np.argsort(-m)[:k]])}
    for name, want in expected.items():
        t = make(name, task, ref)
        got = t.meta_set.ids.numpy()
        assert len(got) == k and set(got.tolist()) == want, name
        assert set(t.train_set.ids.tolist()) == set(ids.tolist()) - want
        assert t.info["erm_pass"] == "reused" and t.info["val_size"] == k and t.info["pool_size"] == len(ids)
    hard, easy = make("lrw_hard", task, ref).info, make("lrw_easy", task, ref).info
    assert hard["val_erm_margin_mean"] < hard["rest_erm_margin_mean"] < easy["val_erm_margin_mean"]
    assert ref.calls == 8   # 4 trials x (ranking + the other ranking's share)


def test_random_selection_is_seeded_and_of_exact_size(fixed):
    task, ref, by_id = fixed
    k = round(DELTA * len(by_id))
    a, b, c = (make("lrw_random", task, ref, seed=s).meta_set.ids.tolist() for s in (0, 0, 1))
    assert len(a) == len(c) == k
    assert a == b and set(a) != set(c)


def test_noise_fraction_of_the_validation_set_is_reported(fixed):
    task, ref, _ = fixed
    t = make("lrw_hard", task, ref)
    flipped = (t.meta_set.labels != t.meta_set.true_labels).float().mean().item()
    assert t.info["val_noise_fraction"] == pytest.approx(flipped)
    total = 10 + 10   # train and val each have 10 flipped labels
    val_noisy = round(flipped * t.info["val_size"])
    assert t.info["rest_noise_fraction"] == pytest.approx((total - val_noisy) / t.info["train_size"])


@pytest.mark.parametrize("selection", ["hard", "easy", "random"])
def test_controls_train_on_the_same_split_as_their_lrw_variant(fixed, selection):
    task, ref, _ = fixed
    lrw = make(f"lrw_{selection}", task, ref, seed=3)
    ctl = make(f"erm_withheld_{selection}", task, ref, seed=3)
    assert ctl.meta_set is None and not ctl.uses_meta_set
    assert ctl.train_set.ids.tolist() == lrw.train_set.ids.tolist()
    assert ctl.withheld.ids.tolist() == lrw.meta_set.ids.tolist()


def test_ties_are_broken_by_id_and_class_balance_is_per_class():
    ids = np.array([50, 10, 40, 20, 30, 60, 70, 80, 90, 5])
    margins = np.array([0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.9, -0.2, 0.9, 0.9])
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    hard = select_validation(ids, margins, labels, 0.3, "hard", 0)
    assert sorted(ids[hard]) == [10, 40, 80]            # -0.2, then the lowest ids among the 0.0 ties
    easy = select_validation(ids, margins, labels, 0.2, "easy", 0)
    assert sorted(ids[easy]) == [5, 70]                 # the lowest ids among the 0.9 ties
    balanced = select_validation(ids, margins, labels, 0.4, "hard", 0, class_balanced=True)
    assert sorted(ids[balanced]) == [10, 40, 60, 80]   # 2 of class 0 (ties by id), 2 of class 1


def test_delta_must_select_something():
    with pytest.raises(ConfigError, match="method.hparams.delta"):
        select_validation(np.arange(10), np.zeros(10), np.zeros(10), 0.01, "hard", 0)


@pytest.mark.parametrize("delta", [0, 1, 1.5, -0.1])
def test_delta_outside_unit_interval_is_a_one_line_config_error(delta):
    cfg = TrialConfig.model_validate({"dataset": {"name": "digits"},
                                      "method": {"name": "lrw_hard", "hparams": {"delta": delta}}})
    with pytest.raises(ConfigError) as err:
        resolve(cfg)
    assert str(err.value).startswith("method.hparams.delta:") and "\n" not in str(err.value)


def test_trial_reuses_the_stored_erm_run_and_matches_in_process_erm(tmp_path):
    base = {"dataset": {"name": "digits"}, "model": {"name": "mlp", "options": {"hidden": [32]}},
            "train": {"epochs": 1, "batch_size": 64}, "seed": 0}
    cfg = resolve(TrialConfig.model_validate({**base, "method": {"name": "lrw_hard"}}))
    fresh = run_trial(cfg, tmp_path / "fresh")                         # no store: ERM in-process
    erm_cfg = resolve(erm_reference_config(cfg))
    run_trial(erm_cfg, tmp_path / "store" / trial_id(erm_cfg))
    for k in range(2):   # the out-of-fold models the crossfit ranking declares, as the sweep runs them
        run_fold(cfg, 2, k, oof_dir(tmp_path / "store" / trial_id(erm_cfg), 2, k))
    reused = run_trial(cfg, tmp_path / "run", store_root=tmp_path / "store")
    assert fresh["method_info"]["erm_pass"] == "in_process"
    assert reused["method_info"]["erm_pass"] == "reused"
    for key in ("val_erm_margin_mean", "rest_erm_margin_mean"):   # the in-process ERM models are the stored ones
        assert reused["method_info"][key] == fresh["method_info"][key]
    # with the stored ERM trial both rankings are at hand: the before/after official-val share is recorded
    assert set(reused["method_info"]["val_official_val_share_by_ranking"]) == {"crossfit", "erm_on_train"}


@pytest.mark.parametrize("name", ["lrw_hard", "erm_withheld_hard"])
def test_cli(name, tmp_path, capsys):
    assert train_main(["--dataset", "digits", "--model", "cnn", "--model-opt", "channels=[8]", "--method", name,
                       "--epochs", "2", "--train", "batch_size=256", "--out", str(tmp_path / "run")]) == 0
    assert '"test/acc"' in capsys.readouterr().out
