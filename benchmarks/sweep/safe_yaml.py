"""YAML from users, read defensively: UTF-8 only, duplicate keys are errors, alias expansion is bounded.

Every problem is a one-line ConfigError that quotes at most a short excerpt of the input.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from molere.config import ConfigError

MAX_NODES = 100_000        # a sweep file has hundreds; YAML anchor "bombs" expand to billions
MAX_BYTES = 1 << 20


def excerpt(value, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters (error messages never echo more of the input)."""
    text = repr(value) if not isinstance(value, str) else value
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _expanded_size(node: Node, memo: dict, limit: int) -> int:
    """Number of nodes `node` stands for once every alias is expanded (stops counting past `limit`)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = limit + 1          # a recursive alias counts as too large
    if isinstance(node, SequenceNode):
        children = node.value
    elif isinstance(node, MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_size(child, memo, limit)
        if total > limit:
            break
    memo[key] = total
    return total


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            self.flatten_mapping(node)
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                    seen.add(key)
                except TypeError:
                    continue
                if dup:
                    line = key_node.start_mark.line + 1
                    raise ConfigError(f"duplicate key {excerpt(key, 40)!r} (line {line}); give each key once")
        return super().construct_mapping(node, deep)


def loads(text: str):
    """Parse YAML text with the checks above (ConfigError on any problem)."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, MAX_NODES) > MAX_NODES:
            raise ConfigError(f"YAML aliases expand to more than {MAX_NODES} values (an alias bomb?)")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML{where}: {excerpt(what, 80)}") from None
    except RecursionError:
        raise ConfigError("YAML nested too deeply") from None
    finally:
        loader.dispose()


def load_file(path: str | os.PathLike):
    """Read and parse a YAML file: missing, a directory, too large, not UTF-8 -> ConfigError."""
    p = Path(path)
    try:
        if p.is_dir():
            raise ConfigError("is a directory; give the path of a YAML file such as sweeps/quickstart.yaml")
        if p.stat().st_size > MAX_BYTES:
            raise ConfigError(f"larger than {MAX_BYTES >> 20} MiB; a sweep file is a few kB of YAML")
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found; give the path of a YAML file such as sweeps/quickstart.yaml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read it ({exc.strerror or type(exc).__name__})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                          "save the file as UTF-8") from None
    if "\0" in text:
        raise ConfigError("not a text file (it contains NUL bytes)")
    return loads(text)
