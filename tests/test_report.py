"""Reports on a synthetic result store with known numbers: statistics, missing/failed cells, ordering check,
margin analysis, HTML and the offline W&B summary run."""
from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import scipy.stats as sps
import pandas as pd
import pytest
from scipy import stats as sps

from benchmarks.report import build_report
from benchmarks.report.__main__ import main as report_main
from benchmarks.trial.store import RunDir, write_json

SEEDS = (0, 1, 2)
METHODS = ("erm", "lrw_easy", "lrw_random", "lrw_hard", "molere", "erm_withheld_easy", "erm_withheld_random",
           "erm_withheld_hard", "mwn")
BASE = {"erm": 0.80, "lrw_easy": 0.78, "lrw_random": 0.81, "lrw_hard": 0.83, "molere": 0.84,
        "erm_withheld_easy": 0.79, "erm_withheld_random": 0.795, "erm_withheld_hard": 0.775, "mwn": 0.82}
GROUPS = [("toy", "clean"), ("toy", "symmetric-0.4"), ("shift", "clean")]   # "shift" has OOD + group metrics
MISSING = ("toy", "clean", "lrw_random", 2)
FAILED = ("toy", "clean", "lrw_hard", 1)
DIVERGED = ("toy", "symmetric-0.4", "mwn", 0)   # sealed with status "diverged" (molere.guard), at chance
N_TEST = 300


def accuracy(dataset, regime, method, seed):
    base = BASE[method]
    if regime == "symmetric-0.4" and method in ("lrw_hard", "lrw_easy"):   # ordering violated: Hard < Easy
        base = {"lrw_hard": 0.76, "lrw_easy": 0.82}[method]
    rng = np.random.default_rng(zlib.crc32(repr((dataset, regime, method, seed)).encode()))
    return float(base + rng.normal(0, 0.01))


def margins_of(dataset, regime, method, seed):
    """Test margins in [-1, 1] keyed by id, stored in a trial-specific order (pairing must use ids)."""
    rng = np.random.default_rng(zlib.crc32(repr(("m", dataset, regime, method, seed)).encode()))
    ids = np.arange(1000, 1000 + N_TEST)
    m = np.clip(rng.uniform(-1.05, 1.05, N_TEST), -1, 1)
    order = rng.permutation(N_TEST)
    return ids[order], m[order]


def build_store(root, groups=GROUPS, methods=METHODS):
    plan = []
    for dataset, regime in groups:
        for method in methods:
            for seed in SEEDS:
                tid = f"{dataset}-{regime}-{method}-{seed}".replace(".", "")
                cfg = {"dataset": {"name": dataset}, "regime": {"kind": regime}, "model": {"name": "mlp"},
                       "method": {"name": method, "hparams": {"delta": 0.1} if "lrw" in method or "withheld"
                                  in method else {}},
                       "train": {"epochs": 3, "device": "cpu"}, "seed": seed}
                plan.append({"trial_id": tid, "labels": {"dataset": dataset, "regime": regime, "method": method,
                                                         "seed": seed, "hparams_id": "h0"}, "config": cfg})
                if dataset == "shift":   # the sweep runner names the ERM partner; elsewhere it is matched by key
                    plan[-1]["erm_trial_id"] = f"{dataset}-{regime}-erm-{seed}".replace(".", "")
                if (dataset, regime, method, seed) == MISSING:
                    continue
                run = RunDir(root / "trials" / tid)
                run.start({"trial_id": tid, "config": cfg, "versions": {"python": "3.11", "torch": "2.14.1"}})
                if (dataset, regime, method, seed) == FAILED:
                    run.fail(RuntimeError("non-finite loss in epoch 2"))
                    continue
                acc = accuracy(dataset, regime, method, seed)
                for epoch in (1, 2, 3):
                    run.append_metrics({"epoch": epoch, "train/loss": 1 / epoch, "test/acc": acc - 0.05 * (3 - epoch)})
                ids, m = margins_of(dataset, regime, method, seed)
                run.save_margins({"test_ids": ids, "test_margins": m, "test_labels": ids % 3, "test_preds": ids % 3})
                metrics = {"epoch": 3, "test/acc": acc, "train/loss": 0.3}
                if dataset == "shift":
                    metrics.update({"ood_test/acc": acc - 0.2, "test/worst_group_acc": acc - 0.1})
                if (dataset, regime, method, seed) == DIVERGED:
                    run.finish({"trial_id": tid, "status": "diverged", "metrics": {**metrics, "test/acc": 0.1},
                                "diverged_epoch": 3, "diverged_reason": "one class took 100% of the predictions"})
                    continue
                run.finish({"trial_id": tid, "status": "done", "metrics": metrics, "wall_time_s": 1.0})
    write_json(root / "plan.json", plan)
    (root / "sweep.yaml").write_text("name: synthetic\nseeds: [0, 1, 2]\n")
    return plan


@pytest.fixture(autouse=True, scope="module")
def no_fsync():
    """The store fsyncs every record; the synthetic store does not need the durability."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("benchmarks.trial.store.os.fsync", lambda fd: None)
        yield


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    build_store(root)
    wdir = tmp_path_factory.mktemp("wandb")
    result = build_report(root, wandb_settings={"mode": "offline", "dir": str(wdir), "project": "test"})
    return root, result


def independent(a, b):
    d = 100 * (np.asarray(a) - np.asarray(b))
    n = len(d)
    half = sps.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
    return d.mean(), d.mean() - half, d.mean() + half, sps.ttest_rel(a, b).pvalue


def acc_ci(a) -> str:
    """'mean [lo, hi] (n=k)' of accuracies in percent: the 95% t-interval, computed independently."""
    a = 100 * np.asarray(a)
    lo, hi = sps.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=sps.sem(a))
    return f"{a.mean():.2f} [{lo:.2f}, {hi:.2f}] (n={len(a)})"


def seeds_done(dataset, regime, method):
    return [s for s in SEEDS if (dataset, regime, method, s) not in (MISSING, FAILED)]


def fmt(mean, lo, hi, p, n):
    ptxt = "<0.001" if p < 1e-3 else f"{p:.3f}"
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}], p={ptxt} (n={n})"


def read_table(root, name):
    return {ext: (root / "report" / "tables" / f"{name}.{ext}").read_text() for ext in ("md", "csv", "tex")}


@pytest.mark.parametrize("dataset,method", [("toy", "mwn"), ("toy", "lrw_hard"), ("toy", "lrw_random"),
                                            ("toy", "molere"), ("shift", "lrw_easy")])
def test_gains_match_independent_paired_statistics(report, dataset, method):
    root, _ = report
    seeds = seeds_done(dataset, "clean", method)
    a = [accuracy(dataset, "clean", method, s) for s in seeds]
    b = [accuracy(dataset, "clean", "erm", s) for s in seeds]
    expected = fmt(*independent(a, b), len(seeds))
    results = pd.read_csv(root / "report" / "tables" / "results.csv")
    row = results[(results["dataset"] == dataset) & (results["regime"] == "clean") & (results["method"] == method)]
    assert row["gain over ERM (pts) [95% CI], p"].item() == expected
    assert row["test acc (%)"].item().startswith(acc_ci(a))
    trials = pd.read_csv(root / "report" / "trials.csv")
    t = trials[(trials["dataset"] == dataset) & (trials["regime"] == "clean") & (trials["method"] == method)]
    got = t.set_index("seed")["gain_over_erm_pts"].dropna()
    np.testing.assert_allclose(got.to_numpy(), 100 * (np.array(a) - np.array(b)), rtol=1e-9)


def test_missing_and_failed_trials_are_counted_in_every_table(report):
    root, result = report
    trials = pd.read_csv(root / "report" / "trials.csv")
    assert len(trials) == len(GROUPS) * len(METHODS) * len(SEEDS)
    status = trials.set_index(["dataset", "regime", "method", "seed"])["status"]
    assert status[MISSING] == "missing" and status[FAILED] == "failed"
    assert "non-finite loss" in trials.set_index(["dataset", "regime", "method", "seed"])["failure"][FAILED]
    for name in ("results", "accuracy_test_acc", "ordering", "meta_effect"):
        for ext, text in read_table(root, name).items():
            assert "1 failed" in text and "1 missing" in text, (name, ext)
    results = pd.read_csv(root / "report" / "tables" / "results.csv")
    row = results[(results["regime"] == "clean") & (results["method"] == "lrw_hard") & (results["dataset"] == "toy")]
    assert row["trials"].item() == "2/3 done (1 failed)"


def test_a_diverged_trial_is_counted_apart_and_never_averaged_in(report):
    root, result = report
    trials = pd.read_csv(root / "report" / "trials.csv").set_index(["dataset", "regime", "method", "seed"])
    assert trials["status"][DIVERGED] == "diverged" and result["counts"]["diverged"] == 1
    assert trials["failure"][DIVERGED] == "diverged at epoch 3: one class took 100% of the predictions"
    results = pd.read_csv(root / "report" / "tables" / "results.csv")
    row = results[(results["regime"] == "symmetric-0.4") & (results["method"] == "mwn") & (results["dataset"] == "toy")]
    assert row["trials"].item() == "2/3 done (1 diverged)"
    done = [accuracy("toy", "symmetric-0.4", "mwn", s) for s in (1, 2)]   # the diverged seed 0 is not in the mean
    half = 100 * sps.t.ppf(0.975, 1) * np.std(done, ddof=1) / np.sqrt(2)   # the 95% t-interval of two seeds
    mean = 100 * np.mean(done)
    assert row["test acc (%)"].item() == f"{mean:.2f} [{mean - half:.2f}, {mean + half:.2f}] (n=2); 1 diverged"
    assert row["gain over ERM (pts) [95% CI], p"].item().endswith("(n=2)")
    assert any("diverged at epoch 3" in n and "never averaged in" in n for n in result["notes"])
    assert "1 diverged" in read_table(root, "accuracy_test_acc")["md"]


def test_ood_and_worst_group_columns_only_where_present(report):
    root, result = report
    ood = pd.read_csv(root / "report" / "tables" / "accuracy_ood_test_acc.csv")
    assert set(ood["dataset"]) == {"shift"}
    a = [accuracy("shift", "clean", "mwn", s) - 0.2 for s in SEEDS]
    assert ood["mwn"].item() == acc_ci(a)
    assert (root / "report" / "tables" / "accuracy_test_worst_group_acc.md").exists()
    assert (root / "report" / "figures" / "gains_ood.png").exists()


def test_ordering_check_flags_hard_below_easy(report):
    root, _ = report
    order = pd.read_csv(root / "report" / "tables" / "ordering.csv").set_index(["dataset", "regime"])
    col = "LRW-Easy < LRW-Random < LRW-Hard ≤ MOLERE"
    assert order.loc[("toy", "symmetric-0.4"), col] == "no"
    assert order.loc[("toy", "clean"), col] == "yes"
    # the Hard - Random gap under noise, paired by seed, independently
    a = [accuracy("toy", "symmetric-0.4", "lrw_hard", s) for s in SEEDS]
    b = [accuracy("toy", "symmetric-0.4", "lrw_random", s) for s in SEEDS]
    cell = order.loc[("toy", "symmetric-0.4"), "LRW-Hard − LRW-Random (pts)"]
    assert cell == fmt(*independent(a, b), 3) + "; lrw_random < lrw_hard: no"
    # clean: Hard (seeds 0, 2) vs Random (seeds 0, 1) share one seed -> no interval, no p-value
    assert order.loc[("toy", "clean"), "LRW-Hard − LRW-Random (pts)"].endswith("[n/a, n/a], p=n/a (n=1); "
                                                                             "lrw_random < lrw_hard: yes")


def test_meta_effect_pairs_each_variant_with_its_same_split_control(report):
    root, _ = report
    meta = pd.read_csv(root / "report" / "tables" / "meta_effect.csv")
    row = meta[(meta["dataset"] == "toy") & (meta["regime"] == "clean") & (meta["method"] == "lrw_easy")]
    a = [accuracy("toy", "clean", "lrw_easy", s) for s in SEEDS]
    c = [accuracy("toy", "clean", "erm_withheld_easy", s) for s in SEEDS]
    e = [accuracy("toy", "clean", "erm", s) for s in SEEDS]
    assert row["control"].item() == "erm_withheld_easy"
    assert row["method − control (pts)"].item() == fmt(*independent(a, c), 3)
    assert row["control − ERM (pts)"].item() == fmt(*independent(c, e), 3)


def _independent_deltas(dataset, regime, method):
    refs, deltas = [], []
    for s in seeds_done(dataset, regime, method):
        ids, m = margins_of(dataset, regime, method, s)
        rids, rm = margins_of(dataset, regime, "erm", s)
        ref = dict(zip(rids.tolist(), rm.tolist()))
        refs += [ref[i] for i in ids.tolist()]
        deltas += [v - ref[i] for i, v in zip(ids.tolist(), m.tolist())]
    return np.array(refs), np.array(deltas)


def test_margin_bins_and_deltas_match_numpy(report):
    root, _ = report
    ref, d = _independent_deltas("toy", "clean", "lrw_hard")
    bins = pd.read_csv(root / "report" / "tables" / "margin_bins.csv")
    got = bins[(bins["dataset"] == "toy") & (bins["regime"] == "clean") & (bins["method"] == "lrw_hard")]
    which = np.minimum(np.floor((ref + 1.0) / 0.2 + 1e-9).astype(int), 9)
    assert got["count"].tolist() == [int((which == b).sum()) for b in range(10)]
    np.testing.assert_allclose(got["mean"], [d[which == b].mean() for b in range(10)], atol=1e-12)
    np.testing.assert_allclose(got["sem"], [d[which == b].std(ddof=1) / np.sqrt((which == b).sum())
                                            for b in range(10)], atol=1e-12)
    summ = pd.read_csv(root / "report" / "tables" / "margin_deltas.csv")
    s = summ[(summ["dataset"] == "toy") & (summ["regime"] == "clean") & (summ["method"] == "lrw_hard")]
    assert s["examples"].item() == len(d) == 2 * N_TEST
    np.testing.assert_allclose([s["mean_delta"].item(), s["median_delta"].item()], [d.mean(), np.median(d)])
    trials = pd.read_csv(root / "report" / "trials.csv")
    t = trials[(trials["dataset"] == "toy") & (trials["regime"] == "clean") & (trials["method"] == "lrw_hard")
               & (trials["seed"] == 0)]
    np.testing.assert_allclose(t["margin_delta_mean"].item(), d[:N_TEST].mean())


def test_html_references_every_figure_and_they_exist(report):
    root, result = report
    html = (root / "report" / "index.html").read_text()
    refs = re.findall(r'<img src="([^"]+)"', html)
    assert len(refs) >= 5
    for ref in refs:
        assert (root / "report" / ref).is_file() and (root / "report" / ref).stat().st_size > 5000, ref
    assert {str(root / "report" / r) for r in refs} == set(result["figures"])
    assert "Ordering check" in html and "1 failed" in html and "torch" in html and "2.14.1" in html
    assert "seeds: [0, 1, 2]" in html


def test_wandb_summary_run_holds_the_tables(report):
    from benchmarks.wandb_io.reader import load_table, read_run
    _, result = report
    assert result["wandb"]["logged"], result["wandb"]
    run_dir = result["wandb"]["run_dir"]
    run = read_run(run_dir)
    assert run["run"]["job_type"] == "summary" and run["run"]["group"] == "synthetic"
    logged = {k: v for row in run["history"] for k, v in row.items()}
    for name in ("results", "ordering", "meta_effect"):
        assert f"tables/{name}" in logged, sorted(logged)
    cols, rows = load_table(run_dir, logged["tables/ordering"])
    holds = dict(((r[0], r[1]), r[cols.index("holds")]) for r in rows)
    assert holds[("toy", "symmetric-0.4")] == "no"
    # numeric (sortable) cells: the paired gap's mean, CI and p-value are numbers, not display strings
    gap = [r[cols.index("lrw_random - lrw_easy mean")] for r in rows if (r[0], r[1]) == ("toy", "clean")][0]
    seeds = sorted(set.intersection(*(set(seeds_done("toy", "clean", m))   # the seeds every member finished
                                      for m in ("lrw_easy", "lrw_random", "lrw_hard", "molere"))))
    assert gap == pytest.approx(np.mean([100 * (accuracy("toy", "clean", "lrw_random", s)
                                                - accuracy("toy", "clean", "lrw_easy", s)) for s in seeds]))
    assert isinstance(rows[0][cols.index("lrw_easy mean")], float)
    cols, rows = load_table(run_dir, logged["tables/results"])
    by = {(r[cols.index("dataset")], r[cols.index("regime")], r[cols.index("variant")]): r for r in rows}
    acc = by[("toy", "clean", "erm")][cols.index("test/acc mean")]
    assert acc == pytest.approx(np.mean([accuracy("toy", "clean", "erm", s) for s in SEEDS]))
    assert by[("toy", "clean", "erm")][cols.index("gain mean")] is None          # ERM: no gain over itself
    assert isinstance(by[("toy", "clean", "mwn")][cols.index("gain p")], float)
    cols, rows = load_table(run_dir, logged["data/trials"])
    assert len(rows) == len(GROUPS) * len(METHODS) * len(SEEDS)
    assert any(k.startswith("figures/") for k in logged)
    (art,) = [a for a in run["artifacts"] if a["type"] == "report"]
    assert {"index.html", "report.md", "trials.csv", "tables/ordering.csv", "figures/gains.png"} <= set(art["files"])


def test_partial_stores_and_cli(tmp_path, capsys):
    """Only ERM and LRW-Hard (one failed seed) plus a planned trial that never ran: no ordering table, the
    binned-margin panel says which methods have no data; an ERM-only store skips figures with notes."""
    plan = build_store(tmp_path / "a", groups=[("toy", "clean")], methods=("erm", "lrw_hard"))
    write_json(tmp_path / "a" / "plan.json", plan + [{**plan[-1], "trial_id": "never-ran"}])
    assert report_main([str(tmp_path / "a"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "1 missing" in out and "1 failed" in out
    assert not (tmp_path / "out" / "tables" / "ordering.md").exists()
    assert "Fewer than two of LRW-Hard finished" in (tmp_path / "out" / "index.html").read_text()
    assert (tmp_path / "out" / "figures" / "margin_bins.png").exists()
    build_store(tmp_path / "b", groups=[("toy", "clean")], methods=("erm",))
    r = build_report(tmp_path / "b")
    assert any("skipped" in n for n in r["notes"]) and Path(r["index"]).exists()
    with pytest.raises(SystemExit) as exc:
        report_main([str(tmp_path / "nowhere")])
    assert exc.value.code == 2
