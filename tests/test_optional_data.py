"""Every test that reads optional data goes through its one marker (tests/optional_data.py), so the suite
passes on a machine without it (CI hides it: .ci/run)."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import optional_data as OD

TESTS = Path(__file__).resolve().parent
MARKER = "needs_fashion_mnist"
# tests that name the data set without reading the installed copy (why)
NO_DATA_READ = {"test_cli.py::test_list_shows_every_registry": "checks the name in `benchmarks.list`",
                "test_sweep_schema.py::test_full_data_override_of_fashion_mnist_sweep": "plans the sweep only",
                "test_stability.py::test_the_stability_sweeps_cover_every_registered_method": "loads the sweep only"}
OWN_COPY = ("fake_fashion", "root")   # a call or keyword that gives the loader its own (fake) copy


def _names(node) -> set[str]:
    return {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute))}


def _uses(node) -> list[ast.Constant]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value == OD.FASHION_MNIST]


def _marked_params(node) -> list[ast.Call]:
    return [c for c in ast.walk(node) if isinstance(c, ast.Call) and "param" in _names(c.func)
            and any(k.arg == "marks" and MARKER in _names(k.value) for k in c.keywords)]


def _own_copy(fn) -> bool:
    keywords = {k.arg for c in ast.walk(fn) if isinstance(c, ast.Call) for k in c.keywords}
    return bool(keywords & set(OWN_COPY)) or bool(_names(fn) & set(OWN_COPY))


def unmarked_uses(source: str, filename: str) -> list[str]:
    """'file::test' for every test function that names Fashion-MNIST outside its marker (and neither builds its
    own copy nor is known to read no data)."""
    out, tree = [], ast.parse(source)
    module = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
              for t in node.targets if isinstance(t, ast.Name)}     # e.g. a CASES list the parametrize names
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef) or not fn.name.startswith("test"):
            continue
        where = f"{filename}::{fn.name}"
        if any(MARKER in _names(d) and not isinstance(d, ast.Call) for d in fn.decorator_list) or where in NO_DATA_READ:
            continue
        parts = fn.decorator_list + fn.body
        parts += [module[n] for n in sorted(set().union(*map(_names, parts)) & module.keys())]
        marked = {id(n) for d in parts for p in _marked_params(d) for n in _uses(p)}
        used = [n for part in parts for n in _uses(part) if id(n) not in marked]
        if used and not _own_copy(fn):
            out.append(where)
    return out


def test_every_fashion_mnist_test_goes_through_the_marker():
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        found += unmarked_uses(path.read_text(), path.name)
    assert found == [], f"mark these with tests.optional_data.needs_fashion_mnist: {found}"


def test_the_check_catches_an_unmarked_use_and_accepts_a_marked_one():
    bad = textwrap.dedent('''
        @pytest.mark.parametrize("args", [["--dataset", "fashion_mnist"], ["--dataset", "digits"]])
        def test_cli(args): ...
        def test_load():
            load_task(DatasetConfig(name="fashion_mnist"))
        CASES = [pytest.param("fashion_mnist", marks=pytest.mark.skipif(True, reason="own check"))]
        @pytest.mark.parametrize("dataset", CASES)
        def test_listed(dataset): ...
    ''')
    good = textwrap.dedent('''
        @pytest.mark.parametrize("args", [pytest.param(["--dataset", "fashion_mnist"], marks=needs_fashion_mnist),
                                          ["--dataset", "digits"]])
        def test_cli(args): ...
        @needs_fashion_mnist
        def test_load():
            load_task(DatasetConfig(name="fashion_mnist"))
        def test_fake(tmp_path):
            load_task(DatasetConfig(name="fashion_mnist", root=str(tmp_path)))
        CASES = [pytest.param("fashion_mnist", marks=needs_fashion_mnist), "digits"]
        @pytest.mark.parametrize("dataset", CASES)
        def test_listed(dataset): ...
    ''')
    assert unmarked_uses(bad, "x.py") == ["x.py::test_cli", "x.py::test_load", "x.py::test_listed"]
    assert unmarked_uses(good, "x.py") == []


def test_marked_tests_skip_with_the_reason_when_the_data_is_absent(tmp_path, monkeypatch):
    """A marked test skips (reason shown) where the loaders find no copy; an unmarked one is left alone."""
    (tmp_path / "test_x.py").write_text(textwrap.dedent('''
        from tests.optional_data import needs_fashion_mnist
        @needs_fashion_mnist
        def test_reads(): pass
        def test_plain(): pass
    '''))
    (tmp_path / "conftest.py").write_text(textwrap.dedent('''
        import benchmarks.data.datasets.embedded as E
        E.DEBIAN_FASHION_DIR = "/nonexistent/fashion-mnist"
        def pytest_collection_modifyitems(config, items):
            from tests.optional_data import skip_absent
            skip_absent(items)
    '''))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path),
                          "-c", "/dev/null", "--rootdir", str(tmp_path)], capture_output=True, text=True,
                         cwd=TESTS.parent)
    assert "1 passed, 1 skipped" in out.stdout, out.stdout[-1500:] + out.stderr[-1500:]
    assert "dataset-fashion-mnist" in out.stdout


def test_installed_knows_only_declared_data():
    with pytest.raises(ValueError, match="unknown optional data"):
        OD.installed("imagenet")
