"""Report tables as display frames of strings, written as Markdown, CSV and LaTeX.

Accuracies and gains are in percent / accuracy points, with 95% t-intervals over seeds (the one interval
type of the report). A cell whose trials did not all finish says so with counts ("1 diverged, 1 failed,
1 missing": a diverged trial is never averaged in); "n/a" marks a statistic that needs two or more seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .methods import Methods
from .collect import METRIC_NAMES, order_metrics
from scipy import stats as sps

from .stats import TEST_NAME


@dataclass
class Table:
    name: str
    title: str
    caption: str
    frame: pd.DataFrame                       # strings only
    bold: set = field(default_factory=set)    # (row index, column name) cells to mark as best
    legend: str = ""                          # one line saying what bold means (shown under the table)
    collapsed: str = ""                       # one line shown instead of the rows not in `shown`
    shown: list | None = None                 # row indices shown on the page (None: all); files hold all

    def rows_shown(self) -> list:
        return list(self.frame.index) if self.shown is None else [i for i in self.frame.index if i in self.shown]

    def markdown(self) -> str:
        cols = list(self.frame.columns)
        cell = lambda i, c: f"**{self.frame.at[i, c]}**" if (i, c) in self.bold else self.frame.at[i, c]
        lines = [f"### {self.title}", ""] + ([self.collapsed, ""] if self.collapsed else [])
        if self.rows_shown():
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(cell(i, c).replace("|", "\\|") for c in cols) + " |" for i in self.rows_shown()]
        return "\n".join(lines + [""] + ([self.legend, ""] if self.legend else []) + [self.caption, ""])

    def csv(self) -> str:
        out = self.frame.copy()
        if self.bold:
            out["best"] = [", ".join(c for c in self.frame.columns if (i, c) in self.bold) for i in out.index]
        return out.to_csv(index=False)

    def latex(self) -> str:
        cols = list(self.frame.columns)
        cell = lambda i, c: (f"\\textbf{{{_tex(self.frame.at[i, c])}}}" if (i, c) in self.bold
                             else _tex(self.frame.at[i, c]))
        body = [" & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
        body += [" & ".join(cell(i, c) for c in cols) + r" \\" for i in self.frame.index]
        return "\n".join([r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{_tex(self.caption)}}}",
                          f"\\label{{tab:{self.name}}}", f"\\begin{{tabular}}{{{'l' * len(cols)}}}", r"\toprule",
                          *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])

    def write(self, folder: Path) -> dict[str, str]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for ext, text in (("md", self.markdown()), ("csv", self.csv()), ("tex", self.latex())):
            (folder / f"{self.name}.{ext}").write_text(text)
            paths[ext] = str(folder / f"{self.name}.{ext}")
        return paths


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "≤": r"$\leq$", "−": "-", "—": "--",
        "<": r"$<$", ">": r"$>$"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def num(x, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def pval(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def stat(s: dict) -> str:
    """'+1.20 [-0.31, +2.71], p=0.090 (n=3)' for a paired comparison."""
    if not s or s.get("n", 0) == 0:
        return "no pairs"
    if isinstance(s.get("zero_var"), (bool, np.bool_)) and s["zero_var"]:
        return f"{num(s['mean'], sign=True)}, n/a (zero variance over seeds) (n={int(s['n'])})"
    return f"{num(s['mean'], sign=True)} [{num(s['lo'], sign=True)}, {num(s['hi'], sign=True)}], " \
           f"p={pval(s['p'])} (n={int(s['n'])})"


def ci95(mean: float, std: float, n: int) -> tuple[float, float]:
    """The 95% t-interval of a mean over n seeds (NaN for n < 2)."""
    if n < 2 or std is None or (isinstance(std, float) and math.isnan(std)):
        return float("nan"), float("nan")
    half = float(sps.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def _acc(row, metric: str) -> str:
    n = int(row.get(f"{metric} n", 0) or 0)
    mean, std = 100 * row.get(f"{metric} mean", np.nan), 100 * row.get(f"{metric} std", np.nan)
    lo, hi = ci95(mean, std, n)
    text = "—" if not n else f"{mean:.2f} (n=1)" if n == 1 else f"{mean:.2f} [{num(lo)}, {num(hi)}] (n={n})"
    return f"{text}; {row['note']}" if row["note"] else text


BOLD_SELECTION = ("Bold: the method with the best mean selection-split accuracy in its dataset × regime (what model "
                  "selection would pick without the test set), not the best test accuracy.")


def _metric_label(metric: str) -> str:
    split, _, what = metric.partition("/")
    return f"{split} {METRIC_NAMES.get(what, what)} (%)"


SELECTED = "selection/acc (mean)"   # the column bold follows (report.selection.add_selection_means)


def best_by_selection(g: pd.DataFrame) -> list:
    """Indices of `g` with the best mean selection accuracy (none when the cells have none): never by test."""
    if SELECTED not in g or g[SELECTED].isna().all():
        return []
    return [i for i in g.index if g.at[i, SELECTED] == g[SELECTED].max()]


def results_table(cells: pd.DataFrame, metrics: list[str], mc: Methods) -> Table:
    """Long form: one row per dataset x regime x method; the best by selection accuracy of each dataset x regime
    marked."""
    rows, bold = [], set()
    for i, r in cells.iterrows():
        row = {"dataset": r["dataset"], "regime": r["regime"], "method": r["variant"], "label": mc.label(r["variant"])}
        for m in metrics:
            if m == "test/acc" or r.get(f"{m} n", 0):
                row[_metric_label(m)] = _acc(r, m)
        row["gain over ERM (pts) [95% CI], p"] = "reference" if mc.is_reference(r["method"]) else stat(
            {k[5:]: r[k] for k in r.index if k.startswith("gain ")})
        row["trials"] = f"{r['done']}/{r['planned']} done" + (f" ({r['note']})" if r["note"] else "")
        rows.append(row)
    cols = ["dataset", "regime", "method", "label", *dict.fromkeys(k for r in rows for k in r if k.endswith("(%)")),
            "gain over ERM (pts) [95% CI], p", "trials"]
    frame = pd.DataFrame(rows).reindex(columns=cols).fillna("")
    for _, g in cells.groupby(["dataset", "regime"], sort=False):
        bold |= {(i, _metric_label("test/acc")) for i in best_by_selection(g)}
    return Table("results", "Test accuracy and gain over ERM",
                 "Accuracy (and a dataset's official metrics, e.g. macro-F1): mean over seeds in percent with 95% CI "
                 "(n = finished seeds). Gain: method minus ERM of the "
                 f"same seed in accuracy points, mean with 95% CI and p-value of a {TEST_NAME}; n/a with fewer "
                 "than two pairs. Trials that are not results are counted, never averaged in "
                 "(diverged / failed / missing / incomplete).", frame, bold, legend=BOLD_SELECTION)


def accuracy_table(cells: pd.DataFrame, metric: str) -> Table:
    """Wide form: rows dataset x regime, one column per method, best per row marked."""
    variants = list(dict.fromkeys(cells["variant"]))
    rows, bold = [], set()
    groups = [(k, g) for k, g in cells.groupby(["dataset", "regime"], sort=False) if g[f"{metric} n"].sum()
              or metric == "test/acc"]
    for n, ((dataset, regime), g) in enumerate(groups):
        row = {"dataset": dataset, "regime": regime, **{v: "" for v in variants}}
        for _, r in g.iterrows():
            row[r["variant"]] = _acc(r, metric)
        bold |= {(n, g.at[i, "variant"]) for i in best_by_selection(g)}
        rows.append(row)
    name = "accuracy_" + metric.replace("/", "_")
    return Table(name, f"{_metric_label(metric)} by method",
                 f"{_metric_label(metric)}: mean over seeds with 95% CI (n = finished seeds); "
                 "blank = not planned; unfinished trials counted.", pd.DataFrame(rows), bold, legend=BOLD_SELECTION)


def ordering_table(order: pd.DataFrame, mc: Methods) -> Table:
    rows, members = [], mc.ordering_members()
    claim = mc.ordering_claim(members)
    for _, r in order.iterrows():
        row = {"dataset": r["dataset"], "regime": r["regime"],
               **{f"{mc.card(m).label} (%)": num(r[f"{m} mean"]) for m in members}, claim: r["holds"],
               "paired seeds": str(r.get("paired seeds", ""))}
        for col in r.index:
            if " - " in col and isinstance(r[col], dict):
                hi, lo = col.split(" - ")
                s = r[col]
                row[f"{mc.card(hi).label} − {mc.card(lo).label} (pts)"] = f"{stat(s)}; {lo} {s['relation']} {hi}: " \
                                                         f"{'yes' if s['holds'] else 'no'}"
        row["not finished"] = r["note"]
        rows.append(row)
    return Table("ordering", f"Ordering check: {claim}",
                 "Means of test accuracy (%) over the seeds every listed method finished; each adjacent pair: later "
                 f"minus earlier method on those same seeds, in accuracy points with 95% CI and p-value ({TEST_NAME}). "
                 "'yes/no' judges the paired mean gaps (the same numbers as the gap columns).",
                 pd.DataFrame(rows).fillna(""))


def meta_table(meta: pd.DataFrame, mc: Methods) -> Table:
    rows = [{"dataset": r["dataset"], "regime": r["regime"], "method": r["variant"], "label": mc.label(r["variant"]),
             "gain over ERM (pts)": stat(r["gain"]), "control": r["control"], "control label": mc.label(r["control"]),
             "control − ERM (pts)": stat(r["control gain"]), "method − control (pts)": stat(r["minus control"]),
             "not finished": r["note"]} for _, r in meta.iterrows()]
    return Table("meta_effect", "Meta-learning effect: methods against their same-split control",
                 "Gain over ERM = effect of withholding the δ split + reweighting; control − ERM = effect of "
                 "withholding alone; method − control = effect of the reweighting. Paired by seed, accuracy "
                 f"points, 95% CI, {TEST_NAME}.", pd.DataFrame(rows))


def build_tables(cells: pd.DataFrame, order: pd.DataFrame, meta: pd.DataFrame, mc: Methods,
                 selection_note: str = "") -> list[Table]:
    """The result tables; `selection_note` (the model-selection rule) starts every caption."""
    if cells.empty:
        return []
    metrics = order_metrics(c[:-5] for c in cells.columns if c.endswith(" mean") and not c.startswith("gain"))
    tables = [results_table(cells, metrics, mc)]
    tables += [accuracy_table(cells, m) for m in metrics if cells[f"{m} n"].sum() or m == "test/acc"]
    if not order.empty:
        tables.append(ordering_table(order, mc))
    if not meta.empty:
        tables.append(meta_table(meta, mc))
    if selection_note:
        for t in tables:
            t.caption = f"Selected draws ({selection_note}). {t.caption}"
    return tables
