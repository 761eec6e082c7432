"""`index.html`: one page that opens from disk and leads with the answer.

The page is `SECTIONS` in order, each a function of the `Page` returning HTML: the header (trial counts),
the summary table, the figures, the detail tables, the notes, the configuration. A new section (a paper
view, a verdict page) is one function added to `SECTIONS`; a new table appended to `Page.tables` shows
among the detail tables.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from .methods import Methods

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;color:#222}
h1{margin:.2em 0 .1em;font-size:26px}h2{margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0 .3em;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f2f2f2}td.best{font-weight:bold;background:#e8f4e8}
table.summary{font-size:14px}table.summary td.best{background:#dff0d8}table.summary tr.verdict td{background:#fafafa}
p.legend{font-size:13px;margin:.1em 0}p.caption{font-size:12px;color:#555;max-width:1100px}
p.collapsed{font-size:13px;font-style:italic}img{max-width:100%;border:1px solid #ddd}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}.note{color:#a33}.meta{color:#555;font-size:13px}"""


@dataclass
class Page:
    out_dir: Path
    sweep_name: str
    counts: dict
    summary: object | None                       # the summary Table (report.summary), or None
    tables: list                                 # detail tables, in order
    figures: list[dict]                          # {"file", "title", "caption"}
    notes: list[str]
    sweep_config: str
    versions: dict
    warnings: list[str] = field(default_factory=list)   # notes important enough for the top
    methods: Methods = field(default_factory=Methods)   # the store's method cards (labels)


def table_html(t, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.frame.columns)
    rows = []
    for i in t.rows_shown():
        verdict = css == "summary" and not str(t.frame.at[i, "reference"])
        cells = "".join(f"<td{' class=best' if (i, c) in t.bold else ''}>{html.escape(str(t.frame.at[i, c]))}</td>"
                        for c in t.frame.columns)
        rows.append(f"<tr{' class=verdict' if verdict else ''}>{cells}</tr>")
    files = " · ".join(f'<a href="tables/{t.name}.{e}">{e}</a>' for e in ("md", "csv", "tex"))
    body = f'<table class="{css}"><tr>{head}</tr>{"".join(rows)}</table>' if rows else ""
    return (f'<h3 id="{t.name}">{html.escape(t.title)}</h3>'
            + (f'<p class="collapsed">{html.escape(t.collapsed)}</p>' if t.collapsed else "") + body
            + (f'<p class="legend">{html.escape(t.legend)}</p>' if t.legend else "")
            + f'<p class="caption">{html.escape(t.caption)} ({files})</p>')


def header(page: Page) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in page.counts.items()) or "none"
    out = (f"<h1>Sweep report: {html.escape(page.sweep_name)}</h1><p class=meta>Trials: {html.escape(counts)} · "
           f'<a href="trials.csv">trials.csv</a> (one row per planned trial) · <a href="#notes">notes</a> · '
           f'<a href="#tables">detail tables</a> · <a href="#configuration">configuration</a></p>')
    return out + "".join(f"<p class=note>{html.escape(w)}</p>" for w in page.warnings)


def summary(page: Page) -> str:
    if page.summary is None:
        return "<h2>Summary</h2><p>No method has a finished reference to compare with yet.</p>"
    return "<h2>Summary</h2>" + table_html(page.summary, "summary")


def figures(page: Page) -> str:
    return "<h2>Figures</h2>" + "".join(
        f'<h3>{html.escape(f["title"])}</h3><img src="figures/{html.escape(f["file"])}" alt="{html.escape(f["title"])}">'
        f'<p class="caption">{html.escape(f["caption"])}</p>' for f in page.figures)


def detail_tables(page: Page) -> str:
    out = ['<h2 id="tables">Detail tables</h2>']
    if not any(t.name == "ordering" for t in page.tables):
        mc = page.methods
        members = " / ".join(mc.label(m) for m in mc.ordering_members()) or "the ordering check's methods"
        out.append(f"<h3>Ordering check</h3><p>Fewer than two of {html.escape(members)} finished.</p>")
    return "".join(out + [table_html(t) for t in page.tables])


def notes(page: Page) -> str:
    return '<h2 id="notes">Notes</h2><ul>' + "".join(f"<li>{html.escape(n)}</li>" for n in page.notes) + "</ul>"


def configuration(page: Page) -> str:
    versions = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(', '.join(v))}</td></tr>"
                       for k, v in sorted(page.versions.items()))
    return (f'<h2 id="configuration">Configuration</h2><h3>Software versions (from the trials\' config.json)</h3>'
            f"<table>{versions}</table><h3>Sweep</h3>"
            f"<pre>{html.escape(page.sweep_config or 'sweep.yaml not found')}</pre>")


SECTIONS = [header, summary, figures, detail_tables, notes, configuration]


def write_index(page: Page) -> Path:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(page.sweep_name)} report</title>"
             f"<style>{STYLE}</style></head><body>", *(section(page) for section in SECTIONS), "</body></html>"]
    path = page.out_dir / "index.html"
    path.write_text("\n".join(parts))
    return path


def versions_of(trial_configs: list[dict]) -> dict[str, list[str]]:
    """Every distinct version seen per package across the trials' config.json files."""
    seen: dict[str, set] = {}
    for cfg in trial_configs:
        for k, v in (cfg.get("versions") or {}).items():
            seen.setdefault(k, set()).add(str(v))
    return {k: sorted(v) for k, v in seen.items()}


def sweep_text(sweep_dir: Path) -> str:
    y = sweep_dir / "sweep.yaml"
    if y.exists():
        return y.read_text()
    plan = sweep_dir / "plan.json"
    return json.dumps(json.loads(plan.read_text())[:1], indent=1) if plan.exists() else ""
