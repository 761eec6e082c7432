"""The report's like-for-like tables: each method's gain against the reference that saw the same data (chosen
by realised counts) before its gain over ERM, differing counts marked, realised counts, budgets and sizes;
and MOLERE's split scored by the ERM reference's out-of-fold margins."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.report import build_report
from benchmarks.report.like_for_like import differences
from benchmarks.trial.store import RunDir, write_json
from molere.config import TrainConfig
from molere.reference import ReferenceMargins
from molere.registry import METHODS
from molere.trainer import RunContext
from tests.fakes import finish_synthetic
from tests.test_contract import tiny_task

C = 4


def counts(seen_per_class, steps=12):
    return {"seen": int(sum(seen_per_class)), "seen_per_class": list(seen_per_class), "train": int(sum(seen_per_class)),
            "train_per_class": list(seen_per_class), "meta": 0, "selection": 10, "steps": steps, "budget": "steps"}


ERM, POOL = [100, 60, 30, 10], [110, 66, 33, 11]           # train; train + val (val follows the tail)
BEFORE = [110, 76, 50, 30]                                   # train + a balanced val: the tail topped up
CELLS = {"erm": (0.50, counts(ERM)), "erm_train_val": (0.55, counts(POOL)), "lrw": (0.56, counts(POOL)),
         "erm_withheld_random": (0.51, counts([99, 60, 30, 11])), "mwn": (0.57, counts(POOL, steps=16)),
         "lrw_random": (0.60, counts(BEFORE))}


def write_store(root):
    plan = []
    for method, (acc, c) in CELLS.items():
        for seed in (0, 1):
            tid = f"{method}-{seed}"
            cfg = {"dataset": {"name": "digits"}, "regime": {"kind": "clean"}, "model": {"name": "mlp"},
                   "method": {"name": method, "hparams": {}}, "train": {"epochs": 1}, "seed": seed}
            plan.append({"trial_id": tid, "labels": {"dataset": "digits", "regime": "longtail-100", "method": method,
                                                     "seed": seed, "hparams_id": "h0"}, "config": cfg,
                         "erm_trial_id": f"erm-{seed}", "search_space": {"meta_lr": {}} if method == "mwn" else {},
                         "reference_only": method == "erm_train_val"})
            run = RunDir(root / "trials" / tid)
            run.start({"trial_id": tid, "config": cfg})
            info = {"sizes": {"train": 200, "val": 20, "selection": 25, "test": 500},
                    "val_split": "drawn from the labelled pool after the regime: follows the training distribution"}
            finish_synthetic(run, {"trial_id": tid, "status": "done", "metrics": {"test/acc": acc + 0.01 * seed},
                                   "info": info, "method_info": {"counts": c}})
    write_json(root / "plan.json", plan)


def test_gains_against_the_same_data_reference_come_first_and_differences_are_marked(tmp_path):
    write_store(tmp_path)
    out = build_report(tmp_path)
    table = pd.read_csv(out["tables"]["same_data"]["csv"]).set_index("method")
    ref, gain, erm = ("same-data reference", "gain vs same-data reference (pts) [95% CI], p",
                      "gain over ERM (pts) [95% CI], p")
    assert list(table.columns).index(gain) < list(table.columns).index(erm)
    assert table.loc["lrw", ref] == "ERM (train+val)"                        # it saw train + val: the report says so
    assert table.loc["lrw", gain].startswith("+1.00") and "≠" not in table.loc["lrw", gain]
    assert table.loc["lrw", erm].startswith("+6.00") and "≠ examples seen +10%" in table.loc["lrw", erm]
    assert table.loc["erm_withheld_random", ref] == "ERM" and "≠" not in table.loc["erm_withheld_random", gain]
    assert "≠ steps +33%" in table.loc["mwn", gain]                           # same data, more steps: marked
    assert "class shares TV" in table.loc["lrw_random", gain]                 # the old, topped-up tail: marked
    assert table.loc["lrw", "examples seen: method / reference / ERM"] == "220 / 220 / 200"
    counts_table = pd.read_csv(out["tables"]["counts"]["csv"]).set_index("method")
    assert counts_table.loc["lrw", "per class (min–max)"] == "11–110" and str(counts_table.loc["mwn", "steps"]) == "16"
    budgets = pd.read_csv(out["tables"]["budgets"]["csv"]).set_index("method")
    assert budgets.loc["mwn", "searched"] == "meta_lr"
    assert budgets.loc["erm_train_val", "planned as"].startswith("a ref")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Realised sizes, digits / longtail-100: train 200, val 20 (drawn from the labelled pool" in md
    assert md.index("Gains against the reference that saw the same data") < md.index("Realised counts")


def test_differences_within_tolerance_are_not_marked():
    assert differences(counts([100, 50]), counts([101, 50])) == []
    assert differences(counts([100, 50]), counts([100, 50], steps=13)) == ["steps -8%"]
    assert differences(counts([150, 0]), counts([75, 75])) == ["class shares TV 0.50"]


class FakeReference:
    """The stored ERM run's out-of-fold margins: negative for the first half of the pool ids."""

    def __init__(self, ids):
        self.ids = np.sort(ids)

    def oof_margins(self, folds):
        return ReferenceMargins(self.ids, np.where(self.ids < np.median(self.ids), -1.0, 1.0))

    def pool_margins(self):
        return None

    def test_outputs(self):
        return None


def test_molere_splits_are_scored_by_the_erm_out_of_fold_margins():
    task = tiny_task(n=200)
    ids = torch.cat([task.train.ids, task.val.ids]).numpy()
    factory = METHODS.get("molere")
    torch.manual_seed(0)
    from benchmarks.models import build_model
    model = lambda: build_model("mlp", task.num_classes, task.input_shape, {"hidden": [8]})  # noqa: E731
    t = factory(model(), task, TrainConfig(epochs=3, batch_size=32), factory.Hparams(meta_warmup_epochs=1),
                RunContext(seed=0, model_factory=model, reference=FakeReference(ids)))
    t.fit()
    post = [h for h in t.info["split_history"] if not h["split/warmup"]]
    assert post and all("split/val_erm_oof_misclassified" in h for h in post)
    val_ids = t.pool.ids[t.val_mask].numpy()
    expected = float((val_ids < np.median(ids)).mean())
    assert post[-1]["split/val_erm_oof_misclassified"] == pytest.approx(expected)
    assert post[-1]["split/pool_erm_oof_misclassified"] == pytest.approx(float((ids < np.median(ids)).mean()))
