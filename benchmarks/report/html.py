"""`index.html`: one page that opens from disk — tables, the ordering check, figures (relative links to
figures/*.png), notes, and the sweep's configuration and software versions at the bottom."""
from __future__ import annotations

import html
import json
from pathlib import Path

from . import methods as MC

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 .3em;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f2f2f2}td.best{font-weight:bold;background:#e8f4e8}
p.caption{font-size:12px;color:#555;max-width:1100px}img{max-width:100%;border:1px solid #ddd}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}.note{color:#a33}"""


def _table(t) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.frame.columns)
    rows = []
    for i in t.frame.index:
        cells = "".join(f"<td{' class=best' if (i, c) in t.bold else ''}>{html.escape(str(t.frame.at[i, c]))}</td>"
                        for c in t.frame.columns)
        rows.append(f"<tr>{cells}</tr>")
    files = " · ".join(f'<a href="tables/{t.name}.{e}">{e}</a>' for e in ("md", "csv", "tex"))
    return (f'<h3 id="{t.name}">{html.escape(t.title)}</h3><table><tr>{head}</tr>{"".join(rows)}</table>'
            f'<p class="caption">{html.escape(t.caption)} ({files})</p>')


def write_index(out_dir: Path, sweep_name: str, counts: dict, tables: list, figures: list[dict],
                notes: list[str], sweep_config: str, versions: dict) -> Path:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(sweep_name)} report</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Sweep report: {html.escape(sweep_name)}</h1>",
             "<p>Trials: " + ", ".join(f"{v} {k}" for k, v in counts.items()) +
             ' · machine-readable: <a href="trials.csv">trials.csv</a> (one row per planned trial)</p>']
    if notes:
        parts.append("<ul>" + "".join(f"<li class=note>{html.escape(n)}</li>" for n in notes) + "</ul>")
    order = [t for t in tables if t.name == "ordering"]
    members = " / ".join(MC.label(m) for m in MC.ordering_members()) or "the ordering check's methods"
    parts.append("<h2>Results</h2>" + "".join(_table(t) for t in tables if t.name != "ordering"))
    parts.append("<h2>Ordering check</h2>" + ("".join(_table(t) for t in order) or
                                              f"<p>Fewer than two of {html.escape(members)} finished.</p>"))
    parts.append("<h2>Figures</h2>")
    for f in figures:
        parts.append(f'<h3>{html.escape(f["title"])}</h3><img src="figures/{html.escape(f["file"])}" '
                     f'alt="{html.escape(f["title"])}"><p class="caption">{html.escape(f["caption"])}</p>')
    parts.append("<h2>Configuration</h2><h3>Software versions (from the trials' config.json)</h3><table>"
                 + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(', '.join(v))}</td></tr>"
                           for k, v in sorted(versions.items())) + "</table>")
    parts.append(f"<h3>Sweep</h3><pre>{html.escape(sweep_config or 'sweep.yaml not found')}</pre></body></html>")
    path = out_dir / "index.html"
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
