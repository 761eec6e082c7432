"""Optional data some tests need, and the one marker each such test carries.

`@needs_fashion_mnist` (or `pytest.param(..., marks=needs_fashion_mnist)`) marks a test that reads the
Debian copy of Fashion-MNIST; conftest skips it with the reason below when the files are absent, so the
suite passes with only what the README installs. CI runs the suite with the data hidden, then
`pytest -m optional_data` with it present (.ci/run).
"""
from __future__ import annotations

import pytest

FASHION_MNIST = "fashion_mnist"
REASONS = {FASHION_MNIST: "optional data not installed: Fashion-MNIST IDX files not found in "
                          "/usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)"}

needs_fashion_mnist = pytest.mark.optional_data(FASHION_MNIST)


def installed(name: str) -> bool:
    """Whether the optional data set `name` can be read where the loaders look by default."""
    if name == FASHION_MNIST:
        from benchmarks.data.datasets.embedded import find_idx_files
        return find_idx_files(None)[0] is not None
    raise ValueError(f"unknown optional data {name!r}; known: {sorted(REASONS)}")


def skip_absent(items) -> None:
    """Add a skip with its reason to every collected test marked with absent optional data."""
    seen: dict[str, bool] = {}
    for item in items:
        for mark in item.iter_markers("optional_data"):
            name = mark.args[0]
            if name not in seen:
                seen[name] = installed(name)
            if not seen[name]:
                item.add_marker(pytest.mark.skip(reason=REASONS[name]))
