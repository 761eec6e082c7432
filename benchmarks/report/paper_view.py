"""The paper view: a sweep that names the result it reproduces (`reproduces: figure1`) gets that result in the
paper's layout — Figures 1-2's two panels of gain over ERM, Tables 2-4's rows, Figure 3's mean margin deltas —
ours (mean [95% CI], p, n over seeds, selected draws) beside the paper's value, and the scale difference.

A dataset of ours that is none of the paper's (a CPU twin's digits) is a stand-in row: the paper's column
then shows the median over its own rows, to compare signs and orderings, never magnitudes.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .methods import Methods
from . import paper_numbers as P
from .scale import scale_line, store_scale
from .tables import Table, stat

NOT_IMPLEMENTED = "not implemented yet"
NOT_RUN = "not in this sweep"


def reproduces(sweep_dir) -> str | None:
    """The `reproduces` field of the store's sweep.yaml (None when absent or unreadable)."""
    try:
        return (yaml.safe_load((Path(sweep_dir) / "sweep.yaml").read_text()) or {}).get("reproduces")
    except (OSError, ValueError, AttributeError):
        return None


def paper_text(v: P.Value | None, sign: bool = True) -> str:
    if v is None:
        return "—"
    if v.approx and "–" in v.text:
        return v.text
    text = (f"{v.value:+.2f}" if sign else f"{v.value:.2f}") + (f" ± {v.std:g}" if v.std is not None else "")
    return ("≈" + text) if v.approx else text


def _cell(cells: pd.DataFrame, dataset: str, regime: str, method: str | None):
    hit = cells[(cells["dataset"] == dataset) & (cells["regime"] == regime) & (cells["method"] == method)]
    return None if hit.empty else hit.iloc[0]


def _absent(method: str | None) -> str:
    from .. import catalog
    return NOT_IMPLEMENTED if method is None or method not in catalog.METHODS else NOT_RUN


def our_gain(cells, dataset, regime, method, metric="test/acc") -> str:
    """'+1.20 [-0.31, +2.71], p=0.090 (n=3)': the method's paired gain over ERM on `metric`."""
    row = _cell(cells, dataset, regime, method)
    if row is None:
        return _absent(method)
    pre = "gain" if metric == "test/acc" else f"gain[{metric}]"
    return stat({k: row.get(f"{pre} {k}", np.nan) for k in ("n", "mean", "lo", "hi", "p", "zero_var")}) \
        if pd.notna(row.get(f"{pre} n", np.nan)) else "no ERM pairs"


def our_acc(cells, dataset, regime, method, metric="test/acc") -> str:
    """'76.12 ± 0.31 (n=3)': mean ± std over seeds of the method's accuracy (%) on `metric`."""
    row = _cell(cells, dataset, regime, method)
    if row is None:
        return _absent(method)
    n = int(row.get(f"{metric} n", 0) or 0)
    if not n:
        return "no finished trial"
    std = row.get(f"{metric} std", np.nan)
    return f"{100 * row[f'{metric} mean']:.2f} ± " + ("n/a" if pd.isna(std) else f"{100 * std:.2f}") + f" (n={n})"


def _extra_metric(cells: pd.DataFrame, dataset: str) -> str | None:
    """The first accuracy metric of `dataset` beyond test/acc (an OOD test set), if any."""
    sub = cells[cells["dataset"] == dataset]
    found = [c[:-5] for c in sub.columns if c.endswith("/acc mean") and not c.startswith("gain") and
             c != "test/acc mean" and sub[c].notna().any()]
    return sorted(found)[0] if found else None


def _row_map(name: str, cells: pd.DataFrame) -> list[tuple[str, str | None, str | None, str, str | None]]:
    """(label, dataset, regime, metric, paper row) per table row: the paper's rows (ours when measured), then our
    stand-ins (figure2's on their first OOD metric)."""
    spec = P.result(name)
    paper_rows = list(next(iter(spec["panels"].values()))["rows"])
    ours = list(dict.fromkeys(zip(cells["dataset"], cells["regime"])))
    out, used = [], set()
    for prow in paper_rows:
        d = P.dataset_of(prow)
        mine = [(ds, rg) for ds, rg in ours if ds == d["dataset"] and _measured(cells, ds, d["metric"])]
        used |= set(mine)
        out += [(prow + ("" if rg == "clean" else f" [{rg}]"), ds, rg, d["metric"], prow) for ds, rg in mine]
        out += [] if mine else [(prow, None, None, d["metric"], prow)]
    for ds, rg in ours:
        metric = _extra_metric(cells, ds) if name == "figure2" else "test/acc"
        if (ds, rg) not in used and metric:
            out.append((f"{ds} [{rg}] (stand-in)", ds, rg, metric, None))
    return out


def _measured(cells: pd.DataFrame, dataset: str, metric: str) -> bool:
    sub = cells[cells["dataset"] == dataset]
    return f"{metric} mean" in sub and sub[f"{metric} mean"].notna().any()


def gain_panels(name: str, cells: pd.DataFrame, mc: Methods) -> list[Table]:
    """Figure 1 / 2: one table per panel; per paper method an 'ours' and a 'paper' column."""
    spec, rows = P.result(name), _row_map(name, cells)
    tables = []
    for panel, block in spec["panels"].items():
        out = []
        for label, dataset, regime, metric, prow in rows:
            r = {"row": label}
            for m in block["methods"]:
                method = P.method_of(m)
                r[f"{m} (ours)"] = our_gain(cells, dataset, regime, method, metric) if dataset else NOT_RUN
                r[f"{m} (paper)"] = paper_text(P.value(name, prow, m, panel)) if prow else "—"
            out.append(r)
        if any(p is None for *_, p in rows):
            f = P.frame(name)
            f = f[f["panel"] == panel]
            out.append({"row": f"paper: median of its {f['row'].nunique()} rows", **{
                f"{m} (paper)": f"{f[f['column'] == m]['value'].median():+.2f}" for m in block["methods"]}})
        tables.append(Table(f"paper_{name}_{_slug(panel)}", f"{spec['title']}: {panel}", _caption(spec, "gain"),
                            pd.DataFrame(out).fillna("")))
    return tables + _also_run(name, cells, mc, {P.method_of(m) for b in spec["panels"].values() for m in b["methods"]})


def _also_run(name: str, cells: pd.DataFrame, mc: Methods, shown: set) -> list[Table]:
    """Methods of the store that the paper's panels do not show (controls, extra baselines), gain over ERM."""
    extra = [m for m in dict.fromkeys(cells["method"]) if m not in shown and not mc.is_reference(m)]
    if not extra:
        return []
    rows = [{"row": f"{ds} [{rg}]", **{mc.label(m): our_gain(cells, ds, rg, m) for m in extra}}
            for ds, rg in dict.fromkeys(zip(cells["dataset"], cells["regime"]))]
    return [Table(f"paper_{name}_also_run", "Also run (not in the paper's panels): gain over ERM (pts)",
                  "Ours only; test accuracy, paired by seed (mean [95% CI], p, n).", pd.DataFrame(rows))]


def _our_rows(cells: pd.DataFrame, match) -> list[tuple[str, str, str]]:
    """(label, dataset, regime) of our cells: `match(dataset, regime)` names the paper row, else a stand-in."""
    out = []
    for ds, rg in dict.fromkeys(zip(cells["dataset"], cells["regime"])):
        prow = match(ds, rg)
        out.append((prow or f"{ds} [{rg}] (stand-in)", ds, rg))
    return out


def table2_view(cells: pd.DataFrame) -> list[Table]:
    """Table 2: per our dataset with long-tailed regimes, rows = methods, columns = class skews."""
    spec = P.result("table2")
    cifar = P.dataset_of(spec["dataset"])["dataset"]
    regimes = spec["columns"]
    tables = []
    for ds in dict.fromkeys(cells["dataset"]):
        if not set(regimes.values()) & set(cells.loc[cells["dataset"] == ds, "regime"]):
            continue
        label = spec["dataset"] if ds == cifar else f"{ds} (stand-in for {spec['dataset']})"
        out = []
        for m in [*spec["rows"], "ERM"]:
            method = P.method_of(m) or ("erm" if m == "ERM" else None)
            r = {"method": m}
            for skew, regime in regimes.items():
                r[f"skew {skew} (ours)"] = our_acc(cells, ds, regime, method)
                r[f"skew {skew} (paper)"] = paper_text(P.value("table2", m, skew), sign=False)
            out.append(r)
        tables.append(Table(f"paper_table2_{_slug(ds)}", f"{spec['title']}: {label}", _caption(spec, "acc"),
                            pd.DataFrame(out)))
    return tables


def table3_view(cells: pd.DataFrame) -> list[Table]:
    """Table 3: rows = the paper's noisy datasets (ours where measured) and our stand-ins, columns = methods."""
    spec = P.result("table3")

    def match(ds, rg):
        for prow in spec["rows"]:
            d = P.dataset_of(prow)
            if d["dataset"] == ds and (prow != "Inst. C-10" or rg.startswith("instance")):
                return prow + ("" if rg == "clean" else f" [{rg}]")
        return None
    out = []
    for label, ds, rg in _our_rows(cells, match):
        prow = label.split(" [")[0] if label.split(" [")[0] in spec["rows"] else None
        r = {"row": label, "ERM (ours)": our_acc(cells, ds, rg, "erm")}
        for m in spec["methods"]:
            r[f"{m} (ours)"] = our_acc(cells, ds, rg, P.method_of(m))
            r[f"{m} (paper)"] = paper_text(P.value("table3", prow, m), sign=False) if prow else "—"
        out.append(r)
    return [Table("paper_table3", spec["title"], _caption(spec, "acc"), pd.DataFrame(out))]


def table4_view(cells: pd.DataFrame) -> list[Table]:
    """Table 4: per our dataset with an extra test set, the block whose metrics it has (else a stand-in)."""
    spec = P.result("table4")
    tables = []
    for ds, rg in dict.fromkeys(zip(cells["dataset"], cells["regime"])):
        extra = _extra_metric(cells, ds)
        block = next((b for b, s in spec["blocks"].items() if list(s["columns"].values())[1] == extra), None)
        if extra is None:
            continue
        names = spec["blocks"][block or next(iter(spec["blocks"]))]
        metrics = dict(zip(names["columns"], ("test/acc", extra)))
        out = []
        for m in names["rows"]:
            r = {"row": m}
            for col, metric in metrics.items():
                r[f"{col} (ours)"] = our_acc(cells, ds, rg, P.method_of(m), metric)
                r[f"{col} (paper)"] = paper_text(P.value("table4", m, col, block), sign=False) if block else "—"
            out.append(r)
        label = block or f"{ds} [{rg}] (stand-in: test/acc and {extra})"
        tables.append(Table(f"paper_table4_{_slug(ds)}_{_slug(rg)}", f"{spec['title']}: {label}",
                            _caption(spec, "acc"), pd.DataFrame(out)))
    return tables


def margins_view(cells: pd.DataFrame, deltas: pd.DataFrame, mc: Methods) -> list[Table]:
    """Figure 3 (a, b): mean test-margin delta against ERM, ours (pooled over seeds) beside the paper's."""
    spec = P.result("margins")
    out = []
    for (ds, rg), g in deltas.groupby(["dataset", "regime"], sort=False):
        prow = next((r for r in spec["mean_delta"] if P.dataset_of(r)["dataset"] == ds), None)
        r = {"row": prow or f"{ds} [{rg}] (stand-in)"}
        for method in ("molere", "lrw_hard", "lrw_easy"):
            hit = g[g["method"] == method]
            r[f"{mc.label(method)} mean Δ (ours)"] = NOT_RUN if hit.empty else \
                f"{hit['mean_delta'].iloc[0]:+.4f} ({int(hit['examples'].iloc[0])} examples)"
        r["mean Δ (paper)"] = paper_text(P.value("margins", prow, "mean"), sign=True) if prow else "—"
        out.append(r)
    return [Table("paper_margins", spec["title"], _caption(spec, "margin"), pd.DataFrame(out))] if out else []


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_").lower()


def _caption(spec: dict, kind: str) -> str:
    ours = {"gain": "gain over ERM of the same seed in accuracy points, mean [95% CI], paired t-test p (n seeds)",
            "acc": "test accuracy (%), mean ± std over seeds (n)",
            "margin": "mean paired margin delta PM(method) − PM(ERM) on the test set, pooled over seeds"}[kind]
    return (f"Ours: {ours}, selected draws. Paper: {spec['provenance']}; paper setting: {spec['setting']}. "
            "A (stand-in) row is a dataset of ours that is none of the paper's: compare signs and orderings, "
            "not magnitudes. 'not implemented yet': the harness has no such method.")


def paper_view(name: str, cells: pd.DataFrame, sel: pd.DataFrame, sweep_dir, deltas: pd.DataFrame,
               mc: Methods) -> list[Table]:
    """The tables of result `name` in the paper's layout, then the scale table."""
    views = {"figure1": lambda: gain_panels("figure1", cells, mc),
             "figure2": lambda: gain_panels("figure2", cells, mc),
             "table2": lambda: table2_view(cells), "table3": lambda: table3_view(cells),
             "table4": lambda: table4_view(cells), "margins": lambda: margins_view(cells, deltas, mc)}
    tables = views[name]()
    scale = store_scale(sel, sweep_dir, mc)
    rows = [{"dataset": ds, "scale": scale_line(ds, scale, _extra_metric(cells, ds) if name == "figure2" else
                                                "test/acc")} for ds in scale]
    tables.append(Table(f"paper_{name}_scale", "Scale: this store against the paper",
                        "Training examples are those of the ERM trial (after the validation and selection "
                        "hold-outs); (S) = the student re-implementation's statement, unverified.",
                        pd.DataFrame(rows)))
    return tables
