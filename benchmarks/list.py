"""List what can be named in a run: `python -m benchmarks.list [methods|datasets|models] [NAME] [--plugin MOD]`.

With a NAME: its description and every option with its default, allowed values and meaning."""
from __future__ import annotations

import inspect
import json
import shutil
import textwrap

from .cli import Parser, bad_input_exits

PROG = "benchmarks.list"


def _options(obj):
    return getattr(obj, "Hparams", None) or getattr(obj, "Options", None)


def _wrap(text: str, indent: int, width: int) -> str:
    return textwrap.fill(text, width=max(width, indent + 30), initial_indent=" " * indent,
                         subsequent_indent=" " * indent)


def show(kind: str, name: str, reg, width: int) -> None:
    from molere.config import describe_fields
    obj = reg.get(name)
    print(f"{kind[:-1]} {name}")
    for para in (inspect.getdoc(obj) or "").split("\n\n"):
        print(_wrap(" ".join(para.split()), 2, width))
    if kind == "methods":
        from .report.cards import card_for
        card = card_for(name, obj)
        role = card.role + (f" of {card.control_of}" if card.control_of else "")
        print(_wrap(f"report: label {card.label!r}, role {role}" +
                    (f", ordering position {card.ordering}" if card.ordering is not None else ""), 2, width))
    hp = _options(obj)
    rows = describe_fields(hp) if hp is not None else []
    print("options:" if rows else "options: none")
    for field, default, allowed, description in rows:
        print(f"  {field} = {json.dumps(default, default=str)}")
        print(_wrap(f"allowed: {allowed}", 6, width))
        if description:
            print(_wrap(description, 6, width))


def main(argv=None) -> int:
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("kind", nargs="?", choices=["methods", "datasets", "models"])
    p.add_argument("name", nargs="?", help="one entry: its options with defaults, allowed values and meaning")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="module registering extra methods, datasets or models (repeatable)")
    a = p.parse_args(argv)
    from . import catalog      # imports torch and every registered module: after --help
    with bad_input_exits(PROG):
        catalog.import_plugins(a.plugin, "--plugin")
    registries = {"methods": catalog.METHODS, "datasets": catalog.DATASETS, "models": catalog.MODELS}
    width = shutil.get_terminal_size((100, 24)).columns
    if a.name:
        if not a.kind:
            p.error("NAME needs a kind first, e.g. `benchmarks.list methods mwn`")
        with bad_input_exits(PROG):
            show(a.kind, a.name, registries[a.kind], width)
        return 0
    for kind, reg in registries.items():
        if a.kind and kind != a.kind:
            continue
        print(f"{kind}:")
        for name, doc, _ in reg.describe():
            print(textwrap.fill(doc, width=max(width, 60), initial_indent=f"  {name:<20} ", subsequent_indent=" " * 23))
        print(f"  (options of one: python -m benchmarks.list {kind} NAME)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
