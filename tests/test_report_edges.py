"""Statistics at the edges: identical paired differences get no interval and no p-value; the ordering
verdict, its means and its pairwise gaps all use the same paired seeds."""
import pandas as pd
import pytest

import benchmarks.report.summary as SU

from benchmarks.report import build_report
from benchmarks.report.stats import paired
from benchmarks.trial.store import RunDir, write_json
from tests.fakes import claim_column, finish_synthetic


def write_store(root, accs: dict, cards: dict | None = None):
    """Done trials {(method, seed): test accuracy} of one dataset x regime (`cards`: recorded method cards)."""
    plan = []
    for (method, seed), acc in accs.items():
        tid = f"{method}-{seed}"
        cfg = {"dataset": {"name": "toy"}, "regime": {"kind": "clean"}, "model": {"name": "mlp"},
               "method": {"name": method, "hparams": {}}, "train": {"epochs": 1}, "seed": seed}
        plan.append({"trial_id": tid, "labels": {"dataset": "toy", "regime": "clean", "method": method, "seed": seed,
                                                 "hparams_id": "h0"}, "config": cfg,
                     **({"method_card": cards[method]} if method in (cards or {}) else {})})
        run = RunDir(root / "trials" / tid)
        run.start({"trial_id": tid, "config": cfg})
        finish_synthetic(run, {"trial_id": tid, "status": "done", "metrics": {"test/acc": acc}})
    write_json(root / "plan.json", plan)


ERM = {0: 0.7213, 1: 0.6871, 2: 0.7530}


def test_identical_paired_differences_print_no_interval_and_no_p_value(tmp_path):
    accs = {("erm", s): a for s, a in ERM.items()}
    accs |= {("lrw_hard", s): a - 0.0148 for s, a in ERM.items()}            # −1.48 points on every seed
    accs |= {("lrw_random", s): a + 0.01 * (s - 1) for s, a in ERM.items()}   # varies: a real interval
    write_store(tmp_path, accs)
    build_report(tmp_path)
    res = pd.read_csv(tmp_path / "report" / "tables" / "results.csv").set_index("method")
    cell = res.loc["lrw_hard", "gain over ERM (pts) [95% CI], p"]
    assert cell == "-1.48, n/a (zero variance over seeds) (n=3)"
    assert "[" not in cell and "p=" not in cell
    assert "[" in res.loc["lrw_random", "gain over ERM (pts) [95% CI], p"]   # the check is not blanket
    s = paired([0.5, 0.6, 0.7], [0.5 - 0.0148, 0.6 - 0.0148, 0.7 - 0.0148])
    assert s["zero_var"] and s["mean"] == pytest.approx(1.48) and s["lo"] != s["lo"] and s["p"] != s["p"]


def test_ordering_verdict_and_gaps_use_the_same_paired_seeds(tmp_path):
    # Hard beats Random on seeds 0 and 1; seed 2 only Hard has, and it alone would flip the mean ordering
    accs = {("erm", s): a for s, a in ERM.items()}
    accs |= {("lrw_random", 0): 0.70, ("lrw_random", 1): 0.70}
    accs |= {("lrw_hard", 0): 0.71, ("lrw_hard", 1): 0.72, ("lrw_hard", 2): 0.40}
    write_store(tmp_path, accs)
    build_report(tmp_path)
    order = pd.read_csv(tmp_path / "report" / "tables" / "ordering.csv").iloc[0]
    assert str(order["paired seeds"]) == "2"
    assert (order["LRW-Hard (%)"], order["LRW-Random (%)"]) == pytest.approx((71.5, 70.0))   # seeds 0, 1 only
    assert order["LRW-Hard − LRW-Random (pts)"].startswith("+1.50 ")
    assert order["LRW-Hard − LRW-Random (pts)"].endswith("lrw_random < lrw_hard: yes")
    assert order[claim_column(order)].startswith("yes")


def test_two_reports_in_one_process_do_not_share_method_cards(tmp_path, monkeypatch):
    """Store B's report, built while A's is being built, leaves A's labels and roles A's own."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    write_store(a, {(m, s): acc + 0.01 * (m == "spl") for m in ("erm", "spl") for s, acc in ERM.items()},
                {"spl": {"label": "Self-paced A", "rank": 5}})
    write_store(b, {(m, s): acc for m in ("base", "spl", "mwn") for s, acc in ERM.items()},
                {"base": {"label": "Base B", "role": "reference"}, "spl": {"label": "Self-paced B"}})
    real, nested = SU.summary_table, []

    def with_b_built_inside(*args, **kwargs):
        if not nested:
            nested.append(None)   # B's own build passes straight through
            nested.append(build_report(b))
        return real(*args, **kwargs)
    monkeypatch.setattr(SU, "summary_table", with_b_built_inside)
    built = build_report(a)
    assert not [n for n in built["notes"] + nested[-1]["notes"] if "failed" in n]   # no part fell back silently
    res_a = pd.read_csv(a / "report" / "tables" / "results.csv").set_index("method")
    res_b = pd.read_csv(b / "report" / "tables" / "results.csv").set_index("method")
    assert nested and res_a.loc["spl", "label"] == "Self-paced A" and res_b.loc["spl", "label"] == "Self-paced B"
    assert res_a.loc["erm", "gain over ERM (pts) [95% CI], p"] == "reference"
    assert res_b.loc["base", "gain over ERM (pts) [95% CI], p"] == "reference"
    assert "mwn" not in res_a.index and "Base B" not in (a / "report" / "report.md").read_text()
