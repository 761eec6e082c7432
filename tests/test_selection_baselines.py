"""RHO-loss, JTT, StableNet: their maths (exact top-n_b selection, an IL model that never sees the training
split, JTT's error set and up-sampling, a falling decorrelation loss with positive mean-1 weights) and that
each does something (selection differs from uniform, weights spread)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines.rho_loss import top_reducible
from baselines.stablenet import decorrelation_loss, random_fourier_features
from molere.reference import ReferenceMargins
from molere.trainer import Trainer
from tests.oracle import batch_of, toy_task, trainer


# ---- RHO-loss ---------------------------------------------------------------------------------------
def test_top_reducible_takes_the_largest_reducible_losses():
    losses = torch.tensor([2.0, 1.0, 3.0, 0.5, 2.5])
    il = torch.tensor([0.1, 0.0, 2.9, 0.0, 0.5])       # reducible: 1.9, 1.0, 0.1, 0.5, 2.0
    assert top_reducible(losses, il, 2).tolist() == [4, 0]
    assert top_reducible(losses, il, 5).tolist() == [4, 0, 1, 3, 2]


def test_rho_loss_selects_exactly_the_top_nb_and_counts_them():
    tr = trainer("rho_loss", task=toy_task(n=96), batch_size=16, select_fraction=0.25, il_epochs=3)
    assert tr.n_candidates == 64 and tr.n_select == 16
    batch = batch_of(tr.train_set, 16)
    chosen = tr.select(batch)
    cand = tr.candidate_count > 0
    assert 16 < int(cand.sum()) <= 64 and int(tr.candidate_count.sum()) == int(cand.sum())   # no duplicates
    assert set(batch.idx.tolist()) <= set(torch.nonzero(cand).flatten().tolist())
    pos = torch.nonzero(cand).flatten()
    with torch.no_grad():
        reducible = F.cross_entropy(tr.model(tr.train_set.x[pos]), tr.train_set.labels[pos], reduction="none") \
            - tr.il_losses[pos]
    expected = pos[reducible.argsort(descending=True)[:16]]
    assert sorted(chosen.idx.tolist()) == sorted(expected.tolist())
    assert tr.selected_count.sum() == 16 and set(torch.nonzero(tr.selected_count).flatten().tolist()) == \
        set(expected.tolist())


def test_rho_loss_il_model_never_sees_the_training_split(monkeypatch):
    task = toy_task(n=96)
    seen: list[int] = []
    real = Trainer.train_step

    def spy(self, batch):
        seen.extend(self.train_set.ids[batch.idx].tolist())
        return real(self, batch)

    monkeypatch.setattr(Trainer, "train_step", spy)
    tr = trainer("rho_loss", task=task, il_epochs=2)   # the IL model trains inside the constructor
    assert seen and set(seen) <= set(task.val.ids.tolist())
    assert not set(seen) & set(tr.train_set.ids.tolist())
    assert tr.meta_set is task.val and tr.info["meta_size"] == len(task.val)
    il_losses = torch.stack([F.cross_entropy(torch.zeros(1, 3), torch.tensor([0]))] * 1)
    assert not torch.allclose(tr.il_losses, il_losses.expand_as(tr.il_losses))   # the IL model learned


def test_rho_loss_il_model_trains_on_the_holdouts_true_labels_when_asked(monkeypatch):
    task = toy_task(n=96)
    task.val = task.val.with_labels((task.val.labels + 1) % 3)      # every hold-out label observed wrong
    seen: dict[str, dict] = {"observed": {}, "true": {}}
    real = Trainer.train_step

    def spy(self, batch):
        spy.into.update(zip(self.train_set.ids[batch.idx].tolist(), batch.y.tolist()))
        return real(self, batch)

    monkeypatch.setattr(Trainer, "train_step", spy)
    for labels in ("observed", "true"):
        spy.into = seen[labels]
        trainer("rho_loss", task=task, il_epochs=1, meta_labels=labels)
    ids = task.val.ids.tolist()
    assert seen["observed"] == dict(zip(ids, task.val.labels.tolist()))
    assert seen["true"] == dict(zip(ids, task.val.true_labels.tolist()))


def test_rho_loss_keeps_the_il_epoch_with_the_lowest_monitored_training_loss():
    def monitored_mean(tr, monitor):   # the IL losses the classifier selects with, on the monitored examples
        pos = [tr.train_set.ids.tolist().index(i) for i in monitor.ids.tolist()]
        return tr.il_losses[pos].mean().item()

    task = toy_task(n=96, noisy_every=3)
    best = trainer("rho_loss", task=task, il_epochs=12, il_monitor_size=40)
    info = best.info
    assert 1 <= info["il_best_epoch"] < 12 and info["il_monitor_size"] == 40
    assert info["il_monitor_loss"] < info["il_final_monitor_loss"]
    monitor = best.monitor_set(best.train_set)
    assert monitored_mean(best, monitor) == pytest.approx(info["il_monitor_loss"], rel=1e-5)
    final = trainer("rho_loss", task=task, il_epochs=12, il_monitor_size=40, il_checkpoint="final")
    assert "il_best_epoch" not in final.info
    assert monitored_mean(final, monitor) == pytest.approx(info["il_final_monitor_loss"], rel=1e-5)


def test_rho_loss_default_il_budget_matches_the_classifiers_steps():
    tr = trainer("rho_loss", task=toy_task(n=96), batch_size=16, epochs=2)
    assert tr.il_epochs == 2 * 6 // 3   # 12 classifier steps; the 48-example hold-out takes 3 per epoch


def test_rho_loss_selection_differs_from_uniform():
    tr = trainer("rho_loss", task=toy_task(n=96, noisy_every=3), batch_size=16, select_fraction=0.25, epochs=2)
    m = tr.fit()
    assert m["train/reducible_selected"] > m["train/reducible_candidates"] + 0.05
    rate = tr.selected_count / tr.candidate_count.clamp_min(1)
    assert rate.std() > 0.1


# ---- JTT --------------------------------------------------------------------------------------------
class FixedMargins:
    def __init__(self, ids, margins):
        self.ids, self.margins, self.calls = ids, margins, 0

    def pool_margins(self):
        self.calls += 1
        return ReferenceMargins(self.ids, self.margins)

    def oof_margins(self, folds):
        return None

    def test_outputs(self):
        return None


def test_jtt_error_set_is_the_reference_misclassified_upsampled_lambda_times():
    task = toy_task(n=60)
    ids = np.concatenate([task.train.ids.numpy(), task.val.ids.numpy()])
    rng = np.random.default_rng(0)
    margins = rng.uniform(-1, 1, len(ids))
    order = rng.permutation(len(ids))                    # the reference lists the pool in another order
    ref = FixedMargins(ids[order], margins[order])
    tr = trainer("jtt", task=task, reference=ref, up_weight=4)
    errors = {int(i) for i, m in zip(ids, margins) if m < 0 and i in set(task.train.ids.tolist())}
    counts = dict(zip(*np.unique(tr.train_set.ids.numpy(), return_counts=True)))
    assert {i for i, c in counts.items() if c > 1} == errors
    assert all(counts[i] == (4 if i in errors else 1) for i in task.train.ids.tolist())
    assert tr.info["erm_pass"] == "reused" and tr.info["error_set_size"] == len(errors) and ref.calls == 1
    assert len(tr.train_set) == len(task.train) + 3 * len(errors)


def test_jtt_identifies_in_process_for_early_epochs_and_changes_the_training_set():
    task = toy_task(n=60, noisy_every=3)
    ref = FixedMargins(np.zeros(0), np.zeros(0))
    tr = trainer("jtt", task=task, reference=ref, epochs=3, identify_epochs=1)
    assert ref.calls == 0 and tr.info["erm_pass"] == "in_process" and tr.info["identify_epochs"] == 1
    assert tr.info["error_set_size"] > 0 and len(tr.train_set) > len(task.train)
    pos, w = tr.recorded_weights()
    assert set(np.unique(w)) == {1.0, 6.0} and len(pos) == len(task.train)


# ---- StableNet --------------------------------------------------------------------------------------
def correlated_features(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g)
    return torch.cat([z + 0.3 * torch.randn(n, 1, generator=g) for _ in range(6)]
                     + [torch.randn(n, 2, generator=g)], 1).abs()


def mean_decorrelation(h, p, draws=40):
    g = torch.Generator().manual_seed(123)
    return float(np.mean([decorrelation_loss(random_fourier_features(h, 1, g), p).item() for _ in range(draws)]))


def test_stablenet_weights_lower_the_decorrelation_loss_and_stay_positive_mean_one():
    tr = trainer("stablenet", memory=1, inner_steps=40, lambda_p=0.05)
    h = correlated_features()
    w = tr.learn_weights(h)
    assert (w > 0).all() and w.mean().item() == pytest.approx(1.0, abs=1e-5)
    n = len(h)
    assert mean_decorrelation(h, w / n) < 0.95 * mean_decorrelation(h, torch.full((n,), 1.0 / n))
    assert (w.std() / w.mean()).item() > 0.02


def test_stablenet_at_its_defaults_moves_the_weights_and_fills_the_memory():
    tr = trainer("stablenet", task=toy_task(n=96), batch_size=16)
    batch = batch_of(tr.train_set, 16)
    tr.training_step(batch)
    w = tr._recorded[batch.idx]
    assert (w > 0).all() and w.mean().item() == pytest.approx(1.0, abs=1e-5) and w.std() > 0
    assert tr.memory_features[:16].abs().sum() > 0 and tr.memory_features[16:].abs().sum() == 0
    assert tr.steps_seen == 1


def test_random_fourier_features_are_bounded_per_example():
    h = correlated_features()
    f = random_fourier_features(h, 3, torch.Generator().manual_seed(0))
    assert f.shape == (128, 8, 3)
    s = np.sqrt(2 / 3)
    assert f.min() >= s * 1.0 - 1e-5 and f.max() <= s * np.sqrt(2) + 1e-5   # cos + sin on [0, π/2]


# ---- no collapse at the defaults ----------------------------------------------------------------------
NEW = ["mbr", "rho_loss", "maple", "stablenet", "bilaw", "gdw", "jtt"]
QUICK = dict(epochs=20, batch_size=128, lr=0.1, eval_every=20)


def digits_acc(method: str) -> float:
    import tempfile

    from benchmarks.trial.config import TrialConfig
    from benchmarks.trial.execute import run_trial
    cfg = TrialConfig(dataset={"name": "digits"}, regime={"kind": "clean"}, model={"name": "mlp", "options": {
        "hidden": [128]}}, method={"name": method, "hparams": {}}, train=QUICK, seed=0)
    with tempfile.TemporaryDirectory() as d:
        return run_trial(cfg, d)["metrics"]["test/acc"]


@pytest.fixture(scope="module")
def erm_digits():
    return digits_acc("erm")


RHO_AFTER_SAME_DATA = pytest.mark.xfail(reason="measured after the like-for-like merge (val drawn from the labelled "
                                               "pool): RHO-loss 0.917 vs ERM 0.952 at seed 0 (before: 0.937 vs 0.946); "
                                               "open in issue 21's note, not tuned away", strict=False)


@pytest.mark.slow
@pytest.mark.parametrize("method", [pytest.param(m, marks=RHO_AFTER_SAME_DATA) if m == "rho_loss" else m
                                    for m in NEW])
def test_no_collapse_at_the_defaults_on_clean_digits(method, erm_digits, capsys):
    acc = digits_acc(method)
    with capsys.disabled():
        print(f"\n{method}: clean digits test acc {acc:.3f} (ERM {erm_digits:.3f}, quickstart settings, seed 0)")
    assert acc >= erm_digits - 0.03 and acc > 0.5


def test_recorded_weights_reach_the_result_and_the_report(tmp_path):
    import pandas as pd

    from benchmarks.report.reweighting import reweighting_table
    from benchmarks.trial.config import TrialConfig
    from benchmarks.trial.execute import run_trial
    cfg = TrialConfig(dataset={"name": "digits"}, regime={"kind": "symmetric", "rate": 0.4},
                      model={"name": "mlp", "options": {"hidden": [16]}}, method={"name": "mbr", "hparams": {
                          "burn_in": 0.0}}, train=dict(epochs=2, batch_size=128, eval_every=2), seed=0)
    diag = run_trial(cfg, tmp_path / "mbr")["reweighting"]
    assert diag["examples"] > 0 and diag["weight_rel_std"] > 0.01 and "noisy_over_clean_weight" in diag
    assert "meta_displacement" not in diag
    df = pd.DataFrame([{"dataset": "digits", "regime": "symmetric-0.4", "variant": "mbr", "trial_id": "t",
                        "status": "done"}])
    row = reweighting_table(df, {"t": {"reweighting": diag}}).frame.iloc[0]
    assert row["φ displacement"].startswith("n/a") and row["verdict"].startswith("n/a")   # no φ, no verdict
