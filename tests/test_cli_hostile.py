"""Every entry point fails the same way on hostile input: one line `benchmarks.<prog>: error: ...`, exit 2,
before any work (the corpus: tests/hostile_cli.py, also runnable as subprocesses)."""
from __future__ import annotations

import importlib
import sys

import pytest

from tests.hostile_cli import CASES, MODULES, verdict

MAINS = {prog: mod + (".__main__" if prog == "report" else "") for prog, mod in MODULES.items()}


@pytest.fixture
def no_launch(monkeypatch):
    from benchmarks.sweep import scheduler

    def launched(*a, **k):
        raise AssertionError("a sweep was launched")
    monkeypatch.setattr(scheduler, "run_trials", launched)
    monkeypatch.setattr(scheduler, "start_ray", launched)


@pytest.mark.parametrize("prog,case,make,expected", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_hostile_command_line_is_one_line_exit_2(prog, case, make, expected, tmp_path, capsys, monkeypatch,
                                                 no_launch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    main = importlib.import_module(MAINS[prog]).main
    argv = make(tmp_path)
    code = None
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert verdict(code, err, expected) == "ok", err[-2000:]
    assert err.startswith(f"benchmarks.{prog}: error: ")
    assert not (tmp_path / "pwned").exists()


def test_the_corpus_covers_every_entry_point():
    assert len(CASES) >= 50 and {c[0] for c in CASES} == set(MODULES)
