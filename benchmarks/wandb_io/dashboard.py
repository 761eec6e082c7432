"""A sweep's W&B workspace and report, built from its logged runs (`python -m benchmarks.dashboard`, whose
`--help` describes them)."""
from __future__ import annotations

import json
from pathlib import Path

from molere.config import ConfigError

from benchmarks.sweep.stored import read_settings
from benchmarks.wandb_io.reader import read_attempts, run_dirs

GROUPING = ("config.dataset.name", "config.regime", "config.method.name")
BY_METHOD = "config.method.name"
COLUMNS = ("summary:final/test/acc", "summary:gain_over_erm/test_acc", "config:seed.value", "config:hparams_id.value",
           "config:trial_id.value")   # the runs table's column accessors (config values end in .value)
CURVES = (("Step", ("train/step_loss", "lr", "perf/images_per_s", "weights/param_norm", "weights/grad_norm")),
          ("epoch", ("test/acc", "val/acc", "selection/acc", "test/worst_group_acc", "train/loss", "test/margin_mean")))
STANDARD_TRAIN = {"train/step_loss", "train/loss", "train/epoch_time_s", "train/acc_observed", "train/acc_true"}
MARGIN_CHART = "test/margin_delta_vs_erm_plot"      # wandb.plot.line key; its table is logged as <key>_table


# ---- what the runs logged --------------------------------------------------------------------------
def _flat(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}"}
    return out


def logged_keys(wandb_dir: str | Path, group: str) -> dict:
    """{"trials" | "summary": {"runs", "config", "history", "summary"}, "values": {dataset, regime, method}}
    from the local run files (offline or online) of the runs in W&B group `group`."""
    out = {k: {"runs": 0, "config": set(), "history": set(), "summary": set()} for k in ("trials", "summary")}
    values: dict[str, set] = {"dataset": set(), "regime": set(), "method": set()}
    for dirs in run_dirs(wandb_dir).values():
        r = read_attempts(dirs)
        if not r["run"] or r["run"]["group"] != group:
            continue
        kind = out["summary" if r["run"]["job_type"] == "summary" else "trials"]
        kind["runs"] += 1
        kind["config"] |= {f"config.{k}" for k in _flat(r["config"])}
        kind["history"] |= {k for row in r["history"] for k in row if not k.startswith("_")}
        kind["summary"] |= {k for k in r["summary"] if not k.startswith("_")}
        if kind is out["trials"]:
            cfg = r["config"]
            values["dataset"].add((cfg.get("dataset") or {}).get("name"))
            values["regime"].add(cfg.get("regime"))
            values["method"].add((cfg.get("method") or {}).get("name"))
    out["values"] = {k: sorted(v - {None}) for k, v in values.items()}
    return out


# ---- the specification (plain JSON; every key it names was logged) --------------------------------------
def _filters(group: str, summary: bool, **config) -> list[list]:
    return [["Group", "==", group], ["JobType", "==" if summary else "!=", "summary"],
            *[[f"config.{k}", "==", v] for k, v in config.items()]]


def _panels(keys: dict) -> dict[str, list[dict]]:
    """Panel lists per section name, each using only keys present in `keys` (trials' and summary run's)."""
    t, s = keys["trials"], keys["summary"]
    by = BY_METHOD if BY_METHOD in t["config"] else None
    bar = lambda title, k: {"kind": "bar", "runset": "trials", "title": title, "metrics": [k], "groupby": by}
    line = lambda x, k: {"kind": "line", "runset": "trials", "title": f"{k} by method", "x": x, "y": [k], "groupby": by}
    finals = sorted(k for k in t["summary"] if k.startswith("final/") and k.endswith(("/acc", "/worst_group_acc"))
                    and not k.startswith(("final/train/", "final/val/")))
    sections = {
        "Gain over ERM": ([bar("Gain over ERM in test accuracy (points), by method", "gain_over_erm/test_acc")]
                          if "gain_over_erm/test_acc" in t["summary"] else [])
        + [bar(f"{k[6:]} (final), by method", k) for k in finals],
        "Ordering check": [{"kind": "table", "runset": "summary", "title": title, "key": k} for k, title in (
            ("tables/ordering", "Ordering check: LRW-Easy < LRW-Random < LRW-Hard <= MOLERE"),
            ("tables/meta_effect", "Meta-learning effect: train-twice variants vs their same-split ERM control"))
            if k in s["summary"]],
        "Margin deltas vs ERM": [
            *[{"kind": "histogram", "runset": "trials", "title": title, "x": "Step", "y": [k], "groupby": by}
              for k, title in (("test/margin_delta_hist", "Paired test-margin deltas vs ERM"),
                               ("test/margin_hist", "Test margins")) if k in t["history"]],
            *([{"kind": "chart", "runset": "trials", "title": "Margin delta by ERM-margin bin",
                "key": f"{MARGIN_CHART}_table", "chart": "wandb/line/v0",
                "fields": {"x": "erm_margin", "y": "mean_delta"}, "strings": {"title": "Margin delta by ERM-margin bin"}}]
              if f"{MARGIN_CHART}_table" in t["history"] else []),
            *[{"kind": "table", "runset": "summary", "title": k, "key": k}
              for k in ("data/margin_bins", "data/margin_deltas") if k in s["summary"]],
            *[{"kind": "media", "runset": "summary", "title": "Margin figures", "keys": sorted(
                k for k in s["summary"] if k.startswith(("figures/margin_deltas", "figures/margin_bins")))}]],
        "Training curves": [line(x, k) for x, ks in CURVES for k in ks if k in t["history"]
                            and (x == "Step" or "epoch" in t["history"])],
        "Reweighting diagnostics": [line("Step" if k.startswith("train/step_") else "epoch", k)
                                    for k in sorted(t["history"]) if k.startswith("diag/") or (
                                        k.startswith("train/") and k not in STANDARD_TRAIN
                                        and "train/step_" + k[6:] not in t["history"])]
        + [bar(f"{k[6:]} (final), by method", k) for k in sorted(t["summary"]) if k.startswith("final/diag/")],
        "Tables and figures": [
            *[{"kind": "table", "runset": "summary", "title": k, "key": k} for k in sorted(s["summary"])
              if k.startswith("tables/") and k not in ("tables/ordering", "tables/meta_effect")],
            *([{"kind": "table", "runset": "summary", "title": "data/trials", "key": "data/trials"}]
              if "data/trials" in s["summary"] else []),
            *[{"kind": "media", "runset": "summary", "title": "Report figures", "keys": sorted(
                k for k in s["summary"] if k.startswith("figures/"))}]],
    }
    for panels in sections.values():
        panels[:] = [p for p in panels if p.get("keys", True)]
        for p in panels:
            if p.get("groupby") is None:
                p.pop("groupby", None)
    return {name: panels for name, panels in sections.items() if panels}


def build_spec(sweep: str, keys: dict, project: str, entity: str | None = None) -> dict:
    """The dashboard of `sweep` as plain JSON: runsets (filters), the run table's grouping and columns,
    workspace sections, and the report's blocks (one grid per dataset x regime, runs grouped by method)."""
    t = keys["trials"]
    grouping = [g for g in GROUPING if g in t["config"]]
    columns = [c for c in COLUMNS if (c.startswith("summary:") and c[8:] in t["summary"])
               or (c.startswith("config:") and f"config.{c[7:].removesuffix('.value')}" in t["config"])]
    sections = _panels(keys)
    per_cell = [n for n in ("Gain over ERM", "Margin deltas vs ERM", "Training curves", "Reweighting diagnostics")
                if n in sections]
    grids = [{"heading": f"{d} · {r}", "filters": _filters(sweep, False, **{"dataset.name": d, "regime": r}),
              "groupby": [BY_METHOD] if BY_METHOD in t["config"] else [], "sections": per_cell}
             for d in keys["values"]["dataset"] for r in keys["values"]["regime"]]
    return {
        "sweep": sweep, "project": project, "entity": entity,
        "runsets": {"trials": {"filters": _filters(sweep, False)}, "summary": {"filters": _filters(sweep, True)}},
        "grouping": grouping, "columns": columns,
        "sections": [{"name": n, "panels": p} for n, p in sections.items()],
        "report": {"title": f"{sweep}: sample reweighting benchmark",
                   "description": f"{t['runs']} trial runs of sweep {sweep}; group {sweep} in project {project}.",
                   "summary_sections": [n for n in ("Ordering check", "Tables and figures") if n in sections],
                   "grids": grids},
    }


# ---- wandb-workspaces objects --------------------------------------------------------------------------
def _expr_filters(filters: list[list]):
    from wandb_workspaces import expr
    out = []
    for field, op, value in filters:
        key = expr.Config(field[7:]) if field.startswith("config.") else expr.Metric(field)
        out.append(key == value if op == "==" else key != value)
    return expr.And(*out)


def _panel(p: dict):
    import wandb_workspaces.reports.v2 as wr
    group = {} if "groupby" not in p else {"groupby": wr.Config(p["groupby"][7:]), "groupby_aggfunc": "mean",
                                           "groupby_rangefunc": "stderr"}
    if p["kind"] == "bar":
        return wr.BarPlot(title=p["title"], metrics=p["metrics"], orientation="v", **group)
    if p["kind"] in ("line", "histogram"):
        return wr.LinePlot(title=p["title"], x=p["x"], y=p["y"], **group)
    if p["kind"] == "table":
        return wr.WeavePanelSummaryTable(table_name=p["key"])
    if p["kind"] == "chart":
        return wr.CustomChart(query={"summaryTable": {"tableKey": p["key"]}}, chart_name=p["chart"],
                              chart_fields=p["fields"], chart_strings=p["strings"])
    if p["kind"] == "media":
        return wr.MediaBrowser(title=p["title"], media_keys=p["keys"], num_columns=2)
    raise ValueError(f"unknown panel kind {p['kind']!r}")


def workspace(spec: dict, entity: str):
    """The spec's wandb_workspaces Workspace (saved by `.save()`; `._to_model()` works offline)."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr
    return ws.Workspace(
        entity=entity, project=spec["project"], name=f"{spec['sweep']} dashboard",
        sections=[ws.Section(name=s["name"], panels=[_panel(p) for p in s["panels"]], is_open=True)
                  for s in spec["sections"]],
        settings=ws.WorkspaceSettings(max_runs=100),     # lines / groups per panel (wandb's default: 10)
        runset_settings=ws.RunsetSettings(
            filters=_expr_filters(spec["runsets"]["trials"]["filters"][:1]),
            groupby=[expr.Config(g[7:]) for g in spec["grouping"]], pinned_columns=list(spec["columns"])))


def report(spec: dict, entity: str):
    """The spec's wandb_workspaces Report: summary-run panels, then one grid per dataset x regime."""
    import wandb_workspaces.reports.v2 as wr
    sections = {s["name"]: s["panels"] for s in spec["sections"]}
    rs = lambda name, filters, groupby=(): wr.Runset(entity=entity, project=spec["project"], name=name,
                                                      filters=_expr_filters(filters), groupby=list(groupby))
    blocks = [wr.H1(text=spec["report"]["title"]), wr.P(text=spec["report"]["description"])]
    summary = [p for n in spec["report"]["summary_sections"] for p in sections[n]]
    if summary:
        blocks += [wr.H2(text="Tables and figures (summary run)"),
                   wr.PanelGrid(runsets=[rs("summary run", spec["runsets"]["summary"]["filters"])],
                                panels=[_panel(p) for p in summary])]
    for g in spec["report"]["grids"]:
        panels = [_panel(p) for n in g["sections"] for p in sections[n] if p["runset"] == "trials"]
        blocks += [wr.H2(text=g["heading"]),
                   wr.PanelGrid(runsets=[rs(g["heading"], g["filters"], g["groupby"])], panels=panels)]
    return wr.Report(project=spec["project"], entity=entity, title=spec["report"]["title"][:128],
                     description=spec["report"]["description"], blocks=blocks, width="fluid")


# ---- build, write, publish ----------------------------------------------------------------------------
def sweep_settings(sweep_dir: Path) -> dict:
    """name, project, entity, mode and wandb dir from SWEEP_DIR/sweep.yaml (written by benchmarks.run)."""
    raw = read_settings(sweep_dir)
    w = raw.get("wandb") or {}
    return {"name": raw.get("name") or sweep_dir.name, "project": w.get("project") or "molere-bench",
            "entity": w.get("entity"), "mode": w.get("mode") or "auto", "dir": w.get("dir") or str(sweep_dir)}


PUBLISH = """# Publishing the W&B dashboard of sweep {name}

This folder holds the dashboard specification (`spec.json`) and the workspace's W&B view spec
(`workspace.json`), built from the keys the sweep's offline runs logged. To publish:

    wandb login
    wandb sync --yes {wandb_dir}/wandb/offline-run-*      # a resumed run's attempts are synced in order
    python -m benchmarks.dashboard {sweep_dir} --publish [--entity ENTITY]

The last command saves the workspace and the report in project `{project}` and prints their URLs.
"""


def build_dashboard(sweep_dir: str | Path, settings: dict | None = None, publish: bool | None = None,
                    entity: str | None = None) -> dict:
    """Build the sweep's dashboard from its logged runs; write it (offline) or save it (online / publish).
    Returns {"spec", "dir", "urls", "messages"}."""
    from benchmarks.wandb_io.log import resolve_mode
    sweep_dir = Path(sweep_dir)
    base = sweep_settings(sweep_dir)
    s = {**base, **{k: v for k, v in (settings or {}).items() if v is not None}}
    keys = logged_keys(s["dir"], base["name"])
    if not keys["trials"]["runs"]:
        raise FileNotFoundError(f"no W&B runs of sweep {base['name']} under {s['dir']}/wandb "
                                "(the dashboard is derived from the runs' logged keys)")
    entity = entity or s.get("entity")
    spec = build_spec(base["name"], keys, s["project"], entity)
    out = sweep_dir / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    view = workspace(spec, entity or "ENTITY")._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")
    (out / "workspace.json").write_text(json.dumps(view, indent=1) + "\n")
    (out / "PUBLISH.md").write_text(PUBLISH.format(name=base["name"], wandb_dir=s["dir"], sweep_dir=sweep_dir,
                                                   project=s["project"]))
    result = {"spec": spec, "dir": str(out), "urls": {}, "messages": []}
    if publish or (publish is None and resolve_mode(s.get("mode") or "auto") == "online"):
        try:
            import wandb
            entity = entity or wandb.Api().default_entity
            spec["entity"] = entity
            w = workspace(spec, entity).save()
            r = report(spec, entity).save()
        except Exception as exc:  # noqa: BLE001 - no login, no network, a refused save: one line saying what to do
            why = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ConfigError(f"--publish: W&B did not save the dashboard ({type(exc).__name__}: {why}); log in "
                              "with `wandb login` or set WANDB_API_KEY on a machine that reaches W&B, sync the runs "
                              f"first ({out}/PUBLISH.md); the offline specification is in {out}") from None
        result["urls"] = {"workspace": w.url, "report": r.url}
        result["messages"] += [f"W&B workspace: {w.url}", f"W&B report: {r.url}"]
    else:
        result["messages"].append(f"W&B dashboard specification: {out}/spec.json (offline; to publish, see "
                                  f"{out}/PUBLISH.md)")
    return result
