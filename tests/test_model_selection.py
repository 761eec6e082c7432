"""Model selection in the report, on a synthetic store with known selection and test accuracies: the selected
draw is the best by mean selection accuracy (never by test), every table uses it, the oracle appears only in
the selection table, bold follows selection, gains pair selected draws seed by seed, trials.csv keeps all."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from benchmarks.report import build_report
from benchmarks.trial.store import RunDir, write_json
from tests.fakes import claim_column, finish_synthetic

SEEDS = (0, 1, 2)
# (method, hparams_id, train lr) -> (selection acc, test acc) per seed offset; draw "b" of each method is the
# oracle (best test) while draw "a" is best on the selection split.
DRAWS = {
    ("erm", "ea", 0.05): (0.70, 0.74), ("erm", "eb", 0.10): (0.66, 0.78),
    ("mwn", "ma", 0.05): (0.75, 0.76), ("mwn", "mb", 0.05): (0.72, 0.90),
    ("lrw_easy", "la", 0.05): (0.73, 0.80),
    ("lrw_random", "ra", 0.05): (0.74, 0.79), ("lrw_random", "rb", 0.05): (0.60, 0.95),
    ("fsr", "fa", 0.05): (0.71, 0.70), ("fsr", "fb", 0.05): (0.71, 0.85),     # a tie on selection
}
NOISE = {0: -0.01, 1: 0.0, 2: 0.013}


def acc(method, hid, seed, which):
    sel, test = [v for (m, h, _), v in DRAWS.items() if (m, h) == (method, hid)][0]
    return (sel if which == "sel" else test) + NOISE[seed] * (1 + sum(map(ord, method)) % 5)   # per-method noise


def build_store(root, epochs_best_at=None):
    """`epochs_best_at`: method -> epoch (of 3) at which that method's selection accuracy peaks."""
    plan = []
    for (method, hid, lr) in DRAWS:
        for seed in SEEDS:
            tid = f"{method}-{hid}-{seed}"
            cfg = {"dataset": {"name": "toy"}, "regime": {"kind": "clean"}, "model": {"name": "mlp"},
                   "method": {"name": method, "hparams": {"draw": hid}},
                   "train": {"epochs": 3, "lr": lr, "device": "cpu"}, "seed": seed}
            plan.append({"trial_id": tid, "config": cfg, "labels": {"dataset": "toy", "regime": "clean",
                                                                    "method": method, "seed": seed, "hparams_id": hid}})
            run = RunDir(root / "trials" / tid)
            run.start({"trial_id": tid, "config": cfg})
            s, t = acc(method, hid, seed, "sel"), acc(method, hid, seed, "test")
            peak = (epochs_best_at or {}).get(method, 3)
            for epoch in (1, 2, 3):
                bonus = 0.2 if epoch == peak and peak != 3 else 0.0
                run.append_metrics({"epoch": epoch, "test/acc": t - 0.1 * (3 - epoch) + bonus / 2,
                                    "selection/acc": s - 0.1 * (3 - epoch) + bonus, "selection/acc_true": s})
            finish_synthetic(run, {"trial_id": tid, "status": "done", "wall_time_s": 1.0,
                        "metrics": {"epoch": 3, "test/acc": t, "selection/acc": s, "selection/acc_true": s + 0.01}})
    write_json(root / "plan.json", plan)
    (root / "sweep.yaml").write_text("name: synthetic_selection\n")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("sel")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("benchmarks.trial.store.os.fsync", lambda fd: None)
        build_store(root)
        wdir = tmp_path_factory.mktemp("wandb")
        result = build_report(root, wandb_settings={"mode": "offline", "dir": str(wdir), "project": "test"})
    return root, result


def mean(method, hid, which):
    return float(np.mean([acc(method, hid, s, which) for s in SEEDS]))


def table(root, name):
    return pd.read_csv(root / "report" / "tables" / f"{name}.csv", dtype=str, keep_default_na=False)


def test_selected_draw_is_best_by_selection_and_oracle_by_test(report):
    root, _ = report
    t = table(root, "selection").set_index("method")
    for method, picked, oracle in (("erm", "ea", "eb"), ("mwn", "ma", "mb"), ("lrw_random", "ra", "rb"),
                                   ("fsr", "fa", "fb"), ("lrw_easy", "la", "la")):
        assert t.at[method, "selected draw"].split()[0] == picked, method
        assert t.at[method, "oracle draw (best by test)"].split()[0] == oracle, method
        gap = 100 * (mean(method, oracle, "test") - mean(method, picked, "test"))
        assert t.at[method, "oracle gap (pts)"] == f"{gap:+.2f}"
        assert t.at[method, "selection acc (%)"] == f"{100 * mean(method, picked, 'sel'):.2f}"
    assert "train.lr=0.05" in t.at["erm", "selected draw"] and "train.lr=0.1" in t.at["erm", "oracle draw (best by test)"]


def test_tables_show_the_selected_draw_and_gains_pair_it_with_selected_erm(report):
    root, result = report
    res = table(root, "results").set_index("method")
    assert len(res) == 5                                     # one row per method, not per draw
    for method, hid in (("mwn", "ma"), ("lrw_random", "ra"), ("erm", "ea")):
        a = [acc(method, hid, s, "test") for s in SEEDS]
        lo, hi = sps.t.interval(0.95, 2, loc=100 * np.mean(a), scale=sps.sem(100 * np.asarray(a)))
        assert res.at[method, "test acc (%)"] == f"{100 * np.mean(a):.2f} [{lo:.2f}, {hi:.2f}] (n=3)"
    d = 100 * (np.array([acc("mwn", "ma", s, "test") for s in SEEDS]) - [acc("erm", "ea", s, "test") for s in SEEDS])
    assert res.at["mwn", "gain over ERM (pts) [95% CI], p"].startswith(f"{d.mean():+.2f} [")
    order = table(root, "ordering").iloc[0]
    assert order["LRW-Random (%)"] == f"{100 * mean('lrw_random', 'ra', 'test'):.2f}"
    assert order[claim_column(order)].startswith("no")   # the oracle draw would have said yes
    for name in ("results", "accuracy_test_acc", "ordering"):
        assert "Selected draws (model selection:" in (root / "report" / "tables" / f"{name}.md").read_text()
    assert any("model selection" in n.lower() for n in result["notes"])
    assert "never used" in (root / "report" / "tables" / "selection.md").read_text()


def test_wandb_summary_names_the_rule_and_logs_the_selected_table(report):
    from benchmarks.wandb_io.reader import load_table, read_run
    _, result = report
    assert result["wandb"]["logged"], result["wandb"]
    run = read_run(result["wandb"]["run_dir"])
    assert run["config"]["model_selection"] == result["selection_rule"]
    logged = {k: v for row in run["history"] for k, v in row.items()}
    cols, rows = load_table(result["wandb"]["run_dir"], logged["tables/results"])
    assert sorted(r[cols.index("method")] for r in rows) == ["erm", "fsr", "lrw_easy", "lrw_random", "mwn"]
    assert "tables/selection" in logged


def test_bold_follows_selection_not_test(report):
    root, _ = report
    md = (root / "report" / "tables" / "results.md").read_text()
    bold = [line for line in md.splitlines() if "**" in line]
    assert len(bold) == 1 and "| mwn |" in bold[0]           # best selection (0.75), not best test (lrw_easy)
    assert "**" not in (root / "report" / "tables" / "selection.md").read_text()
    wide = (root / "report" / "tables" / "accuracy_test_acc.csv").read_text()
    assert wide.strip().splitlines()[1].endswith(",mwn")


def test_trials_csv_keeps_every_draw_with_selection_columns(report):
    root, _ = report
    trials = pd.read_csv(root / "report" / "trials.csv")
    assert len(trials) == len(DRAWS) * len(SEEDS)
    sel = trials[trials["selected"]]
    assert sorted(set(zip(sel["method"], sel["hparams_id"]))) == sorted(
        [("erm", "ea"), ("mwn", "ma"), ("lrw_easy", "la"), ("lrw_random", "ra"), ("fsr", "fa")])
    row = trials[(trials["method"] == "mwn") & (trials["hparams_id"] == "mb") & (trials["seed"] == 1)].iloc[0]
    assert row["selection/acc"] == pytest.approx(acc("mwn", "mb", 1, "sel"))
    assert row["selection/acc_true"] == pytest.approx(acc("mwn", "mb", 1, "sel") + 0.01)
    assert row["draw_selection_acc"] == pytest.approx(mean("mwn", "mb", "sel")) and not row["selected"]
    assert row["oracle"]


def test_best_epoch_selection_uses_each_trials_best_selection_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr("benchmarks.trial.store.os.fsync", lambda fd: None)
    build_store(tmp_path, epochs_best_at={"mwn": 2})
    result = build_report(tmp_path, selection_epoch="best")
    assert "best evaluated epoch" in result["selection_rule"]
    trials = pd.read_csv(tmp_path / "report" / "trials.csv")
    m = trials[(trials["method"] == "mwn") & (trials["hparams_id"] == "ma") & (trials["seed"] == 0)].iloc[0]
    assert m["selected_epoch"] == 2
    assert m["test/acc"] == pytest.approx(acc("mwn", "ma", 0, "test") - 0.1 + 0.1)
    e = trials[(trials["method"] == "erm") & (trials["seed"] == 0)]
    assert (e["selected_epoch"] == 3).all()
