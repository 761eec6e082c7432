"""Shared command-line plumbing: one-line errors and exit code 2 for bad input."""
from __future__ import annotations

import sys
from contextlib import contextmanager

from molere.config import ConfigError
from molere.registry import UnknownNameError

from benchmarks.data.datasets.common import DataMissingError

BAD_INPUT = (ConfigError, UnknownNameError, DataMissingError)
MAX_CHARS = 1000


@contextmanager
def bad_input_exits(prog: str):
    """Turn bad-input exceptions into `prog: error: <one line>` and exit status 2."""
    try:
        yield
    except BAD_INPUT as exc:
        text = " ".join(str(exc).split())          # one line, and never more than a screenful
        print(f"{prog}: error: {text if len(text) <= MAX_CHARS else text[:MAX_CHARS - 1] + '…'}", file=sys.stderr)
        raise SystemExit(2) from None
