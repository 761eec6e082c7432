"""The report leads with the answer: the summary table (gains over the same-data reference with 95% CIs,
marked where the CI excludes 0, the ordering and reweighting verdicts) on the first screen, then figures,
then detail tables; one interval type; the selection table collapsed to a line; the README block generated."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.report import build_report
from benchmarks.report.__main__ import main as report_main
from benchmarks.report.readme import BEGIN, END
from tests.test_report import DIVERGED, FAILED, MISSING, SEEDS, accuracy, build_store, independent

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("benchmarks.trial.store.os.fsync", lambda fd: None)
        build_store(root)
        result = build_report(root)
    return root, result


def summary(root) -> pd.DataFrame:
    return pd.read_csv(root / "report" / "tables" / "summary.csv", keep_default_na=False).set_index("method")


@pytest.mark.parametrize("method,label", [("mwn", "MWN"), ("lrw_hard", "LRW-Hard"), ("molere", "MOLERE")])
def test_summary_cells_are_the_paired_gains_and_marked_where_the_ci_excludes_0(store, method, label):
    root, _ = store
    s = summary(root)
    for dataset, regime in (("toy", "clean"), ("toy", "symmetric-0.4")):
        seeds = [x for x in SEEDS if (dataset, regime, method, x) not in (MISSING, FAILED, DIVERGED)]   # never averaged in
        a = [accuracy(dataset, regime, method, x) for x in seeds]
        b = [accuracy(dataset, regime, "erm", x) for x in seeds]
        mean, lo, hi, _ = independent(a, b)
        cell = s.at[label, f"{dataset} / {regime}"]
        assert cell.startswith(f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"), cell
        assert cell.endswith(" *") == (lo > 0 or hi < 0), cell
        assert (f"{dataset} / {regime}" in s.at[label, "best"].split(", ")) == (lo > 0 or hi < 0)
    assert s.at[label, "reference"] == "ERM"
    assert "ERM" not in s.index                                       # the reference has no row of its own


def test_summary_verdict_rows(store):
    root, _ = store
    s = summary(root)
    order = next(i for i in s.index if i.startswith("Ordering: LRW-Easy < LRW-Random < LRW-Hard ≤ MOLERE"))
    assert s.at[order, "toy / symmetric-0.4"].startswith("no;")       # Hard below Easy there
    assert s.at[order, "shift / clean"].startswith("yes;")
    rew = s.loc["Reweighting (method − same-split control)"]
    assert "CIs include 0" in rew["toy / symmetric-0.4"] or rew["toy / symmetric-0.4"].endswith(" *")
    meta = pd.read_csv(root / "report" / "tables" / "meta_effect.csv")
    hard = meta[(meta["dataset"] == "shift") & (meta["method"] == "lrw_hard")]["method − control (pts)"].item()
    assert hard.startswith("+") and "LRW-Hard +" in rew["shift / clean"]   # +5.5 points over its control


def test_page_order_summary_then_figures_then_tables_and_one_interval_type(store):
    root, result = store
    page = (root / "report" / "index.html").read_text()
    positions = [page.index(x) for x in ("<h2>Summary</h2>", "<h2>Figures</h2>", 'id="tables"', 'id="notes"')]
    assert positions == sorted(positions)
    assert page.index("Gain over the same-data reference") < page.index("<img")
    text = re.sub(r"<[^>]+>", " ", page)
    assert "SEM" not in text and "± 1 std" not in text and "standard error" not in text
    assert len(result["figures"]) >= 3
    captions = re.findall(r'class="caption">([^<]*)', page)
    assert sum("95%" in c for c in captions) >= 3
    assert page.lower().count("model selection: per dataset x regime x method") == 1   # the long rule once (notes)
    assert "Bold: the method with the best mean selection-split accuracy" in page


def test_selection_table_is_one_line_when_every_method_has_one_draw(store):
    root, _ = store
    page = (root / "report" / "index.html").read_text()
    block = page[page.index('id="selection"'):]
    assert "Every method has one hyperparameter draw" in block
    assert "<table" not in block[:block.index('class="caption"')]
    assert len(pd.read_csv(root / "report" / "tables" / "selection.csv")) > 0   # the file keeps every row


def test_readme_block_is_written_between_the_markers_only(store, tmp_path, capsys):
    root, _ = store
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n{BEGIN}\nold numbers\n{END}\n\nrest\n")
    assert report_main([str(root), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n") and text.endswith(f"{END}\n\nrest\n") and "old numbers" not in text
    block = text.split(BEGIN)[1].split(END)[0]
    mwn = next(line for line in block.splitlines() if line.startswith("| MWN |"))
    assert summary(root).at["MWN", "toy / clean"].split(" *")[0] in mwn
    assert report_main([str(root), "--readme", str(readme)]) == 0 and readme.read_text() == text   # idempotent
    out = capsys.readouterr().out
    assert "Gain over the same-data reference" in out and "report: " in out
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit) as exc:
        report_main([str(root), "--readme", str(readme)])
    assert exc.value.code == 2
    assert "marker" in capsys.readouterr().err and readme.read_text() == "no markers\n"


def test_the_end_of_a_sweep_prints_the_summary_and_the_report_path(store, capsys):
    from types import SimpleNamespace

    from benchmarks import orchestrate
    root, _ = store
    orchestrate.report(SimpleNamespace(directory=root), None, "benchmarks.run")
    out = capsys.readouterr().out
    assert "Gain over the same-data reference" in out and "MWN" in out
    assert out.strip().splitlines()[-1] == f"report: {root / 'report' / 'index.html'}"


LAYOUT_JS = """<script>
const r = s => { const e = document.querySelector(s); return e ? e.getBoundingClientRect() : null; };
document.body.dataset.layout = JSON.stringify({summary: r('table.summary'), figures: r('h2 + h3 + img'),
  width: document.documentElement.scrollWidth, viewport: window.innerWidth});
</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium) for the browser check")
def test_first_screen_in_a_headless_browser_shows_the_summary(store, tmp_path):
    """Chromium lays out index.html at 1280x900: the whole summary table is on the first screen, the figures
    come after it; the screenshot is a real image of that screen."""
    root, _ = store
    page = tmp_path / "index.html"
    page.write_text((root / "report" / "index.html").read_text().replace("</body>", LAYOUT_JS))
    for sub in ("figures", "tables"):
        shutil.copytree(root / "report" / sub, tmp_path / sub)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    layout = json.loads(re.search(r'data-layout="([^"]+)"', dom).group(1).replace("&quot;", '"'))
    assert 0 < layout["summary"]["top"] and layout["summary"]["bottom"] <= 900, layout
    assert layout["summary"]["right"] <= 1280, layout
    shot = tmp_path / "top.png"
    subprocess.run(flags + [f"--screenshot={shot}", (root / "report" / "index.html").as_uri()], capture_output=True,
                   timeout=120)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 900) and len(png) > 20_000     # a rendered page, not a blank one
    assert np.isfinite(layout["width"])
