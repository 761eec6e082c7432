"""The generated stability matrix and fidelity table (benchmarks.report.stability / .fidelity) on synthetic
stores with known numbers."""
from __future__ import annotations

from pathlib import Path

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
    assert bad == 4 and "**4 of 12 trials fell apart** (4 of them not explained)." in text
    assert "**3 collapsed** [0/3]" in text and "**1 diverged** [2/3]" in text
    assert "toy/clean/fsr/seed 1: diverged (diverged at epoch 2: loss 2.5x)" in text



def test_stability_page_marks_known_falls_with_their_reason_and_the_rest_unexplained(store, tmp_path, monkeypatch):
    known = tmp_path / "known.yaml"
    known.write_text('- {method: l2rw, dataset: "*", regime: clean, why: "measured, see its doc"}\n')
    monkeypatch.setattr(ST, "KNOWN_FALLS", known)
    run = RunDir(store / "trials" / "toy-clean-fsr-1")
    run.finish({**run.result(), "status": "diverged", "diverged_epoch": 2, "diverged_reason": "loss 2.5x"})
    text, _ = ST.render([store])
    assert "toy/clean/l2rw/seed 0: collapsed" in text and text.count("; known\n") == 3
    assert text.count("- Known, l2rw / toy / clean: measured, see its doc") == 1
    assert "toy/clean/fsr/seed 1: diverged (diverged at epoch 2: loss 2.5x); **not explained**" in text
    shipped = Path(ST.__file__).with_name("known_falls.yaml")
    assert ST.known_reason("jtt", "digits", "symmetric-0.4", shipped) and not ST.known_reason("jtt", "digits",
                                                                                              "clean", shipped)


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
    assert FI.verdict(np.nan, np.nan, 0, diverged=3, planned=3) == "not reproduced (3 of 3 seeds diverged)"
    assert FI.verdict(2.0, 0.5, 2, diverged=1, planned=3) == "not reproduced (1 of 3 seeds diverged)"


def test_the_shipped_claims_name_known_measures_and_stores():
    claims = FI.load_claims()
    assert {"mwn", "l2rw", "fsr", "lrw_hard", "gdw", "bilaw", "rho_loss", "mbr"} <= \
        {c["method"] for c in claims.values()}
    for c in claims.values():
        if c.get("not_applicable"):
            assert "store" not in c and "measure" not in c
            continue
        assert c["measure"] in FI.MEASURES and c["store"] in ("fidelity", "fidelity_train_twice", "fidelity_baselines",
                                                                "fidelity_groups")


def test_epochs_to_target_follows_the_official_speedup_rule():
    erm = [{"epoch": 1, "test/acc": 0.5}, {"epoch": 2, "train/loss": 1.0}, {"epoch": 3, "test/acc": 0.9},
           {"epoch": 4, "test/acc": 0.9}, {"epoch": 5, "test/acc": 0.8}]
    # target 0.9, first reached by ERM at epoch 3 (a row without test/acc is no evaluation)
    assert FI.epochs_to_target(erm, [{"epoch": e, "test/acc": a} for e, a in
                                     enumerate((0.6, 0.91, 0.95, 0.7, 0.7), 1)]) == (0.9, 3, 2, 5)
    # equalling the target is not exceeding it; never above it = the epochs run + 1
    assert FI.epochs_to_target(erm, [{"epoch": e, "test/acc": a} for e, a in
                                     enumerate((0.6, 0.9, 0.9, 0.9, 0.9), 1)]) == (0.9, 3, 6, 5)
    assert FI.epochs_to_target(erm, [{"epoch": 1, "test/acc": 0.4}, {"epoch": 2, "test/acc": 0.95}]) == (0.9, 3, 2, 2)
    with pytest.raises(ValueError, match="eval_every"):
        FI.epochs_to_target(erm, [{"epoch": 1, "train/loss": 1.0}])


@pytest.mark.parametrize("base", [0.80, 0.84])   # MWN's epochs: 3, never (4), 3 / 2, 3, 2 against ERM's 3
def test_steps_to_target_rows_pair_each_seed_with_its_erm(tmp_path, monkeypatch, base):
    """The synthetic trials' test accuracy is acc - 0.1, acc - 0.05, acc at epochs 1-3 (tests/test_report)."""
    monkeypatch.setitem(TR.BASE, "mwn", base)
    store = tmp_path / "speed"
    TR.build_store(store, groups=[("toy", "clean")], methods=("erm", "mwn"))
    claims = {"speed": {"method": "mwn", "paper": "P", "claim": "C", "paper_result": "R", "store": store.name,
                        "regime": "clean", "measure": "steps_to_target"}}
    d, parts = [], []
    for s in TR.SEEDS:
        target, own = TR.accuracy("toy", "clean", "erm", s), TR.accuracy("toy", "clean", "mwn", s)
        epoch = next((e for e in (1, 2, 3) if own - 0.05 * (3 - e) > target), 4)
        d.append(3 - epoch)
        parts.append(f"seed {s}: target {target:.3f}, ERM epoch 3, method " +
                     (f"epoch {epoch}" if epoch <= 3 else f"not above it in 3 epochs (counted 4; its best {own:.3f})"))
    d = np.array(d, float)
    assert d.std() > 0
    half = sps.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    text = FI.render([store], claims)
    assert (f"epochs to ERM's best test accuracy, ERM minus method: {d.mean():+.1f} [{d.mean() - half:+.1f}, "
            f"{d.mean() + half:+.1f}] (n=3)") in text
    assert f"- speed / toy: {'; '.join(parts)}" in text
    assert f"**{FI.verdict(d.mean(), d.mean() - half, 3)}**" in text


def test_a_not_applicable_claim_is_a_row_without_a_store(store):
    claims = {"mbr": {"method": "mbr", "paper": "P", "claim": "C", "paper_result": "R",
                      "not_applicable": "no adversarial training here"}}
    text = FI.render([store], claims)
    assert "| mbr: C | MBR | P | R | — | not measured | **not applicable at this scale (no adversarial training " \
           "here)** |" in text
    assert FI.render([], claims).count("**not applicable at this scale (") == 1   # needs no store


def test_gain_over_versus_pairs_the_two_methods_by_seed(store):
    claims = {"g": {"method": "mwn", "versus": "fsr", "paper": "P", "claim": "C", "paper_result": "R",
                    "store": store.name, "regime": "clean", "measure": "gain_over_versus"}}
    d = 100 * np.array([TR.accuracy("toy", "clean", "mwn", s) - TR.accuracy("toy", "clean", "fsr", s)
                        for s in TR.SEEDS])
    half = sps.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    text = FI.render([store], claims)
    assert f"| MWN vs FSR | P | R | toy | test-accuracy difference (points): {d.mean():+.2f} " \
           f"[{d.mean() - half:+.2f}, {d.mean() + half:+.2f}] (n=3)" in text


def test_each_variant_of_a_method_is_its_own_row(store):
    """A store holding two variants of a method (e.g. the sweep's meta options changed) never pools them."""
    import pandas as pd
    from benchmarks.report.collect import collect
    df, mc = collect(store)
    other = df[df["method"] == "mwn"].assign(variant="mwn [abc]", trial_id=lambda d: d["trial_id"] + "-b")
    other["gain_over_erm_pts"] += 50.0
    claim = {"method": "mwn", "regime": "clean", "measure": "gain_over_erm"}
    rows = FI.rows_for("mwn", claim, store, pd.concat([df, other]), mc)
    assert len(rows) == 2 and all("(n=3)" in r["measured"] for r in rows)
    assert rows[1]["method"].endswith("[abc]") and rows[0]["measured"] != rows[1]["measured"]
