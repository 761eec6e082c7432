"""The generated stability matrix and fidelity table (benchmarks.report.stability / .fidelity) on synthetic
stores with known numbers."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from benchmarks.report import fidelity as FI
from benchmarks.report import stability as ST
from benchmarks.trial.store import RunDir
from tests import test_report as TR


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setitem(TR.BASE, "l2rw", 0.5)    # below the midpoint of chance (1/3) and ERM (0.80): collapsed
    monkeypatch.setitem(TR.BASE, "fsr", 0.79)
    root = tmp_path / "fid"
    TR.build_store(root, groups=[("toy", "clean")], methods=("erm", "mwn", "l2rw", "fsr"))
    return root


def test_stability_flags_collapsed_and_diverged_trials(store):
    run = RunDir(store / "trials" / "toy-clean-fsr-1")   # make one trial diverged
    res = run.result()
    run.finish({**res, "status": "diverged", "diverged_epoch": 2, "diverged_reason": "loss 2.5x"})
    df = ST.judge(store)
    fell = df.set_index(["method", "seed"])["fell"]
    assert (fell["l2rw"] == "collapsed").all() and (fell["mwn"] == "").all() and (fell["erm"] == "").all()
    assert fell[("fsr", 1)] == "diverged" and fell[("fsr", 0)] == ""
    assert df["chance"].dropna().round(6).eq(round(1 / 3, 6)).all()
    text, bad = ST.render([store])
    assert bad == 4 and "**4 of 12 trials fell apart.**" in text
    assert "**3 collapsed** [0/3]" in text and "**1 diverged** [2/3]" in text
    assert "toy/clean/fsr/seed 1: diverged (diverged at epoch 2: loss 2.5x)" in text



def test_stability_page_says_when_it_covers_part_of_the_matrix(store):
    assert "have not run" not in ST.render([store])[0]
    (store / "trials" / "toy-clean-mwn-2" / "result.json").unlink()   # one planned trial not (yet) run
    text, _ = ST.render([store])
    assert "1 of the 12 planned trials have not run: this page covers part of the matrix." in text

def test_fidelity_rows_follow_the_claims(store):
    claims = {"mwn": {"method": "mwn", "paper": "P", "claim": "C", "paper_result": "R", "store": store.name,
                      "regime": "clean", "measure": "gain_over_erm"},
              "l2rw": {"method": "l2rw", "paper": "P", "claim": "C", "paper_result": "R", "store": store.name,
                       "regime": "clean", "measure": "gain_over_erm", "requires": "erm_memorises"},
              "other": {"method": "jtt", "paper": "P", "claim": "C", "paper_result": "R", "store": "absent",
                        "regime": "clean", "measure": "gain_over_erm"}}
    d = 100 * np.array([TR.accuracy("toy", "clean", "mwn", s) - TR.accuracy("toy", "clean", "erm", s)
                        for s in TR.SEEDS])
    half = sps.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    expected = FI.verdict(d.mean(), d.mean() - half, 3)
    assert expected == ("reproduced" if d.mean() - half > 0 else
                        "not reproduced" if d.mean() <= 0 else "not reproduced (CI includes 0)")
    text = FI.render([store], claims)
    assert f"gain over ERM (points): {d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}] (n=3)" in text
    assert f"**{expected}**" in text
    assert "**not applicable at this scale (ERM does not memorise)**" in text   # no train/acc_observed stored
    assert "store absent not given | not measured" in text


def test_verdict_rule():
    assert FI.verdict(2.0, 0.5, 3) == "reproduced"
    assert FI.verdict(2.0, -0.5, 3) == "not reproduced (CI includes 0)"
    assert FI.verdict(-1.0, -3.0, 3) == "not reproduced"
    assert FI.verdict(2.0, np.nan, 1).startswith("not applicable")


def test_the_shipped_claims_name_known_measures_and_stores():
    claims = FI.load_claims()
    assert {"mwn", "l2rw", "fsr", "lrw_hard"} <= {c["method"] for c in claims.values()}
    for c in claims.values():
        assert c["measure"] in FI.MEASURES and c["store"] in ("fidelity", "fidelity_train_twice", "fidelity_groups")
