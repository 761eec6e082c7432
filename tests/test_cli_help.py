"""Fast, consistent commands: every entry point's --help imports none of the heavy packages (which is what
makes it fast: no timing here, speed lives in benchmarks.perf), and the flags share one vocabulary
(--results for a store, --out for an output, the old spellings kept as aliases)."""
from __future__ import annotations

import subprocess
import sys

import pytest

ENTRY_POINTS = ("run", "train", "perf", "report", "dashboard", "list", "gpu_check")
HEAVY = ("torch", "ray", "wandb", "pandas", "matplotlib", "timm", "scipy", "sklearn")

PROBE = """
import contextlib, io, runpy, sys
sys.argv = ["x", "--help"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        runpy.run_module("benchmarks.{name}", run_name="__main__")
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
assert "usage:" in out.getvalue()
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_imports_no_heavy_package(name):
    r = subprocess.run([sys.executable, "-c", PROBE.format(name=name, heavy=HEAVY)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"benchmarks.{name} --help imported {r.stdout.strip()}"


def test_the_probe_sees_a_heavy_import():
    """The check above can fail: an entry point that imports torch at the top is caught."""
    code = PROBE.format(name="list", heavy=HEAVY).replace('runpy.run_module("benchmarks.list"',
                                                            'import torch; runpy.run_module("benchmarks.list"')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "torch" in r.stdout, r.stderr


def _help(name: str) -> str:
    return subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], capture_output=True, text=True,
                          timeout=120).stdout


@pytest.mark.parametrize("name,flags", [("run", ["--results"]), ("train", ["--results", "--store", "--out"]),
                                        ("perf", ["--out", "--json"]), ("report", ["--out"]),
                                        ("gpu_check", ["--out"])])
def test_one_vocabulary_with_old_spellings_kept(name, flags):
    text = _help(name)
    for flag in flags:
        assert flag in text, f"benchmarks.{name} --help lacks {flag}"
