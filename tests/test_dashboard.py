"""The generated W&B dashboard (offline): built from a small store with real offline runs, its specification
names only metric and config keys those runs contain, has the promised panels, follows optional keys,
and turns into wandb-workspaces objects."""
from __future__ import annotations

import json

import pytest
import yaml

from benchmarks import dashboard
from benchmarks.wandb_io import dashboard as wandb_dashboard
from benchmarks.report import build_report
from benchmarks.sweep.plan import expand_trials
from benchmarks.sweep.schema import load_sweep
from benchmarks.sweep.stored import write_plan
from benchmarks.sweep.worker import run_one, trial_spec
from benchmarks.wandb_io.log import wandb_settings
from benchmarks.wandb_io.reader import read_attempts, run_dirs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """digits, clean + 20% symmetric noise, ERM / LRW-Easy / MWN, one seed, 1 epoch; the sweep's report
    and its W&B summary run, all offline."""
    root = tmp_path_factory.mktemp("dash")
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "dash", "results_dir": str(root / "results"), "datasets": [{"name": "digits"}],
        "regimes": [{"kind": "clean"}, {"kind": "symmetric", "rate": 0.2}],
        "model": {"name": "mlp", "options": {"hidden": [16]}}, "methods": {"erm": {}, "lrw_easy": {}, "mwn": {}},
        "seeds": [0], "train": {"epochs": 1, "batch_size": 128}, "resources": {"cpu": 1},
        "wandb": {"mode": "offline", "project": "proj", "log_every_steps": 2}}))
    sweep = load_sweep(path)
    plan = sorted(expand_trials(sweep), key=lambda t: t.erm_id != t.trial_id)
    write_plan(sweep, plan)
    settings = wandb_settings(sweep)
    for t in plan:
        assert run_one(trial_spec(t, sweep, settings))["status"] == "done"
    build_report(sweep.directory, wandb_settings=settings)
    return sweep, settings


def runs_by_kind(sweep) -> dict:
    """Independently of benchmarks.dashboard: trial runs and the summary run as read back."""
    out = {"trials": [], "summary": []}
    for dirs in run_dirs(sweep.directory).values():
        r = read_attempts(dirs)
        out["summary" if r["run"]["job_type"] == "summary" else "trials"].append(r)
    return out


def flat(d: dict, prefix="") -> set:
    out = set()
    for k, v in d.items():
        out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {prefix + k}
    return out


def metric_keys(runs) -> set:
    return {k for r in runs for row in r["history"] for k in row} | {k for r in runs for k in r["summary"]}


def test_spec_names_only_keys_the_offline_runs_contain(store):
    sweep, settings = store
    out = wandb_dashboard.build_dashboard(sweep.directory, settings)
    spec = json.loads((sweep.directory / "dashboard" / "spec.json").read_text())
    assert spec == out["spec"]
    runs = runs_by_kind(sweep)
    assert len(runs["trials"]) == 8 and len(runs["summary"]) == 1   # 3 methods + erm_train_val, 2 regimes
    logged = {kind: metric_keys(rs) for kind, rs in runs.items()}
    config = {f"config.{k}" for r in runs["trials"] for k in flat(r["config"])}
    values = {k: {v for r in runs["trials"] for v in vals(r["config"], k)} for k in ("dataset.name", "regime")}
    named = 0
    for section in spec["sections"]:
        for p in section["panels"]:
            keys = p.get("metrics", []) + p.get("y", []) + p.get("keys", []) + ([p["key"]] if "key" in p else [])
            assert keys and set(keys) <= logged[p["runset"]], (section["name"], p)
            named += len(keys)
            if "groupby" in p:
                assert p["groupby"] in config
            if p.get("x") not in (None, "Step"):
                assert p["x"] in logged[p["runset"]]
    assert named > 20
    assert set(spec["grouping"]) <= config and spec["grouping"] == list(wandb_dashboard.GROUPING)
    for col in spec["columns"]:
        section, key = col.split(":", 1)
        assert (f"config.{key.removesuffix('.value')}" in config) if section == "config" else (
            key in logged["trials"]), col
    grids = spec["report"]["grids"]
    assert {g["heading"] for g in grids} == {"digits · clean", "digits · symmetric-0.2"}
    for g in grids + list(spec["runsets"].values()):
        for field, op, value in g["filters"]:
            if field.startswith("config."):
                assert field in config and value in values[field[7:]], (field, value)
            else:
                assert field in ("Group", "JobType")
    assert ["Group", "==", "dash"] in spec["runsets"]["trials"]["filters"]
    assert {r["run"]["group"] for rs in runs.values() for r in rs} == {"dash"}


def vals(cfg: dict, dotted: str):
    for k in dotted.split("."):
        cfg = cfg.get(k) if isinstance(cfg, dict) else None
    return [cfg] if cfg is not None else []


def test_spec_has_the_promised_panels(store):
    sweep, settings = store
    spec = wandb_dashboard.build_dashboard(sweep.directory, settings)["spec"]
    panels = {s["name"]: s["panels"] for s in spec["sections"]}
    assert list(panels) == ["Gain over ERM", "Ordering check", "Margin deltas vs ERM", "Training curves",
                            "Reweighting diagnostics", "Tables and figures"]
    gain = panels["Gain over ERM"][0]
    assert gain["kind"] == "bar" and gain["metrics"] == ["gain_over_erm/test_acc"]
    assert gain["groupby"] == "config.method.name"
    assert [p["key"] for p in panels["Ordering check"]] == ["tables/meta_effect"]   # no LRW-Random/Hard: no ordering
    margin = {p["kind"]: p for p in panels["Margin deltas vs ERM"]}
    assert [p["y"] for p in panels["Margin deltas vs ERM"] if p["kind"] == "histogram"] == [
        ["test/margin_delta_hist"], ["test/margin_hist"]]
    assert margin["chart"]["key"] == "test/margin_delta_vs_erm_plot_table" and margin["chart"]["fields"]["x"] == "erm_margin"
    curves = {p["y"][0]: p for p in panels["Training curves"]}
    assert {"train/step_loss", "lr", "perf/images_per_s", "weights/param_norm", "test/acc", "val/acc"} <= set(curves)
    assert curves["train/step_loss"]["x"] == "Step" and curves["test/acc"]["x"] == "epoch"
    assert all(p["groupby"] == "config.method.name" for p in curves.values())
    diag = {p["y"][0] for p in panels["Reweighting diagnostics"]}
    assert {"train/step_weight_mean", "train/step_weight_ess", "train/step_meta_val_loss"} <= diag
    assert not any(k.startswith("diag/") for k in diag)
    tables = {p.get("key") for p in panels["Tables and figures"]}
    assert {"tables/results", "data/trials"} <= tables
    media = [p for p in panels["Tables and figures"] if p["kind"] == "media"][0]
    assert "figures/gains" in media["keys"]
    assert spec["report"]["summary_sections"] == ["Ordering check", "Tables and figures"]
    assert all(g["groupby"] == ["config.method.name"] for g in spec["report"]["grids"])


def test_panels_follow_the_keys_present(store):
    """Reweighting diagnostics (diag/*) get panels only when runs logged them; no margin-delta panels without
    ERM partners."""
    sweep, _ = store
    keys = wandb_dashboard.logged_keys(sweep.directory, "dash")
    base = wandb_dashboard.build_spec("dash", keys, "proj")
    keys["trials"]["history"] |= {"diag/hard_fraction"}
    keys["trials"]["summary"] |= {"final/diag/weight_gini"}
    more = wandb_dashboard.build_spec("dash", keys, "proj")
    diag = lambda spec: [p for s in spec["sections"] if s["name"] == "Reweighting diagnostics" for p in s["panels"]]
    added = [p for p in diag(more) if p not in diag(base)]
    assert [(p["kind"], (p.get("y") or p.get("metrics"))[0]) for p in added] == [
        ("line", "diag/hard_fraction"), ("bar", "final/diag/weight_gini")]
    for kind in ("history", "summary"):
        keys["trials"][kind] = {k for k in keys["trials"][kind] if "margin_delta" not in k and "gain" not in k}
    bare = wandb_dashboard.build_spec("dash", keys, "proj")
    names = {s["name"]: s["panels"] for s in bare["sections"]}
    assert all(p["runset"] == "summary" or p["kind"] == "histogram" and p["y"] == ["test/margin_hist"]
               for p in names["Margin deltas vs ERM"])
    assert all(p["metrics"] != ["gain_over_erm/test_acc"] for p in names["Gain over ERM"])


def test_wandb_workspaces_objects_offline_and_cli(store, capsys):
    sweep, settings = store
    spec = wandb_dashboard.build_dashboard(sweep.directory, settings)["spec"]
    view = json.loads((sweep.directory / "dashboard" / "workspace.json").read_text())
    sections = view["spec"]["section"]["panelBankConfig"]["sections"]
    assert [s["name"] for s in sections] == [s["name"] for s in spec["sections"]]
    types = [p["viewType"] for s in sections for p in s["panels"]]
    n = lambda *kinds: sum(p["kind"] in kinds for s in spec["sections"] for p in s["panels"])
    assert types.count("Run History Line Plot") == n("line", "histogram") and types.count("Bar Chart") == n("bar")
    assert types.count("Vega2") == n("chart") and types.count("Weave") == n("table")
    report = wandb_dashboard.report(spec, "someone")
    grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    assert len(grids) == 1 + len(spec["report"]["grids"])
    assert grids[1].runsets[0].groupby == ["config.method.name"] and "digits" in grids[1].runsets[0].filters
    publish = (sweep.directory / "dashboard" / "PUBLISH.md").read_text()
    assert "wandb sync" in publish and f"benchmarks.dashboard {sweep.directory} --publish" in publish
    assert dashboard.main([str(sweep.directory)]) == 0
    assert "dashboard/spec.json (offline; to publish, see" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        dashboard.main([str(sweep.directory / "trials")])
    assert exc.value.code == 2 and "no plan.json" in capsys.readouterr().err


def test_publish_without_a_login_is_one_line_and_exit_2(store, capsys, monkeypatch, tmp_path):
    sweep, _ = store
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))          # no ~/.netrc: no login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    with pytest.raises(SystemExit) as exc:
        dashboard.main([str(sweep.directory), "--publish"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--publish: W&B did not save the dashboard" in err and "wandb login" in err
