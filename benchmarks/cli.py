"""The one error path of every entry point: bad input ends in `prog: error: <one line>` and exit status 2,
before any work starts. Argument parsing, plugins, folders and the device are checked here."""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from molere.config import ConfigError
from molere.registry import UnknownNameError

from benchmarks.data.errors import DataMissingError

BAD_INPUT = (ConfigError, UnknownNameError, DataMissingError)
MAX_CHARS = 1000


def fail(prog: str, message: str) -> NoReturn:
    """Print `prog: error: message` on one line (never more than a screenful) and exit with status 2."""
    text = " ".join(str(message).split())
    print(f"{prog}: error: {text if len(text) <= MAX_CHARS else text[:MAX_CHARS - 1] + '…'}", file=sys.stderr)
    raise SystemExit(2)


@contextmanager
def bad_input_exits(prog: str):
    """Turn bad-input exceptions into `prog: error: <one line>` and exit status 2."""
    try:
        yield
    except BAD_INPUT as exc:
        fail(prog, str(exc))


class Parser(argparse.ArgumentParser):
    """argparse whose errors take the same one line (the flag, what was wrong, what is allowed) and exit 2."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see python -m {self.prog} --help)")


def at_least(low: int):
    """An argparse type: an integer >= `low`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {low}")
        return value
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
    return value


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def writable_dir(path: str | os.PathLike, field: str, hint: str = "give a folder you can write") -> Path:
    """The folder `path`, created if missing, into which this process can write (else a ConfigError that
    names `field` and ends with `hint`)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{field}: cannot create or write {p}: it is a file; {hint}")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot create or write {p} ({_why(exc)}); {hint}") from None
    return p


def existing_dir(path: str | os.PathLike, field: str, what: str) -> Path:
    """`path`, which must be an existing folder (`what` says which one)."""
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{field}: {p} is {'a file' if p.exists() else 'missing'}; give {what}")
    return p


def writable_file(path: str | os.PathLike, field: str) -> Path:
    """A file to write at the end of a run: its folder must be writable now (created if missing)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{field}: {p} is a folder; give a file name")
    writable_dir(p.parent, field)
    return p


def check_device(device: str, field: str = "train.device", instead: str = "auto or cpu") -> None:
    """A CUDA device asked for by name must be visible here (`instead`: what to use otherwise)."""
    if not device.startswith("cuda"):
        return
    import torch
    visible = torch.cuda.device_count()
    index = device.partition(":")[2]
    if index and not index.isdigit():
        raise ConfigError(f"{field}: {device!r} is not a device; allowed: auto, cpu, cuda, cuda:N")
    if int(index or 0) >= visible:
        seen = "no CUDA device is visible" if not visible else f"only cuda:0..cuda:{visible - 1} are visible"
        raise ConfigError(f"{field}: {device} asked for, but {seen}; use {instead}"
                          + (" or one of those" if visible else ""))


ONLY_KEYS = ("method", "dataset", "regime", "seed")


def parse_only(items: list[str]) -> dict[str, set[str]]:
    """`--only KEY=V1,V2 ...` (run, report) as {key: values}; a malformed item is a ConfigError."""
    only: dict[str, set[str]] = {}
    for item in items or ():
        key, sep, values = item.partition("=")
        if not sep or key not in ONLY_KEYS or not values:
            raise ConfigError(f"--only: expected KEY=V1,V2 with KEY one of {', '.join(ONLY_KEYS)} (got {item!r})")
        only.setdefault(key, set()).update(v for v in values.split(",") if v)
    return only
