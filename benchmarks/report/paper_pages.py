"""The report's paper pages: the reproduction verdict of any store (verdict.md / verdict.html) and, for a sweep
that names the result it reproduces, that result in the paper's layout (paper_<result>.md / .html); both
linked from index.html. A failure here is a note, never a lost report."""
from __future__ import annotations

import html
import traceback
from pathlib import Path

import pandas as pd

from . import paper_numbers as P
from .paper_view import paper_view, reproduces
from .methods import Methods
from .tables import Table
from .verdict import verdict_frame, verdict_tables

STYLE = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1500px;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;"
         "text-align:left;vertical-align:top}th{background:#f2f2f2}p.caption{font-size:12px;color:#555}")


def write_page(out_dir: Path, name: str, title: str, intro: list[str], tables: list[Table]) -> dict[str, str]:
    """`name`.md and `name`.html (every table, its caption and its md/csv/tex files under tables/)."""
    for t in tables:
        t.write(out_dir / "tables")
    md = f"# {title}\n\n" + "".join(f"{line}\n\n" for line in intro) + "\n".join(t.markdown() for t in tables)
    body = "".join(f"<h2>{html.escape(t.title)}</h2>" + t.frame.to_html(index=False, escape=True, border=0) +
                   f'<p class="caption">{html.escape(t.caption)} (<a href="tables/{t.name}.csv">csv</a>)</p>'
                   for t in tables)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}"
            f"</style></head><body><h1>{html.escape(title)}</h1>" + "".join(f"<p>{html.escape(x)}</p>" for x in intro)
            + body + '<p><a href="index.html">back to the report</a></p></body></html>')
    (out_dir / f"{name}.md").write_text(md)
    (out_dir / f"{name}.html").write_text(page)
    return {"md": str(out_dir / f"{name}.md"), "html": str(out_dir / f"{name}.html")}


def link_from_index(index: Path, links: dict[str, str]) -> None:
    """Add one line of links to the pages right under the index page's title."""
    if not links or not index.exists():
        return
    text = index.read_text()
    line = "<p>Paper: " + " · ".join(f'<a href="{html.escape(href)}">{html.escape(label)}</a>'
                                     for label, href in links.items()) + "</p>"
    at = text.find("</h1>")
    index.write_text(text[:at + 5] + line + text[at + 5:] if at >= 0 else text + line)


def write_paper_pages(sweep_dir, out_dir, sel: pd.DataFrame, cells: pd.DataFrame, order: pd.DataFrame,
                      deltas: pd.DataFrame, index: Path, notes: list[str], mc: Methods) -> dict:
    """Write the verdict page (and the paper view when the sweep names its result); returns {page: paths}."""
    out_dir, pages, links = Path(out_dir), {}, {}
    if len(sel):
        try:
            frame = verdict_frame(sel, order, sweep_dir, mc)
            (out_dir / "tables").mkdir(parents=True, exist_ok=True)
            frame.to_csv(out_dir / "tables" / "verdict_numbers.csv", index=False)
            intro = [f"Each claim of {P.load()['paper']} that this store can test, judged from the store alone."]
            if frame.empty:
                intro.append("This store runs none of the methods the paper's claims compare (MOLERE, two of "
                             "LRW-Easy / Random / Hard): there is nothing to judge.")
            pages["verdict"] = write_page(out_dir, "verdict", "Reproduction verdict", intro,
                                          verdict_tables(frame, sel, sweep_dir, mc))
            links["reproduction verdict"] = "verdict.html"
        except Exception as exc:  # noqa: BLE001 - the rest of the report stands
            notes.append(f"verdict page failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
    name = reproduces(sweep_dir)
    if name and len(cells):
        try:
            spec = P.result(name)
            intro = [f"This sweep reproduces {spec['title']}. Paper: {spec['provenance']}.",
                     f"The paper's setting: {spec['setting']}."]
            pages["paper"] = write_page(out_dir, f"paper_{name}", f"{spec['title']}: ours beside the paper's", intro,
                                        paper_view(name, cells, sel, sweep_dir, deltas, mc))
            links[f"{name} in the paper's layout"] = f"paper_{name}.html"
        except Exception as exc:  # noqa: BLE001
            notes.append(f"paper view ({name}) failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
    link_from_index(index, links)
    return pages
