"""List what can be named in a run: `python -m benchmarks.list [methods|datasets|models] [--plugin MOD]`."""
from __future__ import annotations

import argparse
import json

from . import catalog


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.list", description=__doc__)
    p.add_argument("kind", nargs="?", choices=["methods", "datasets", "models"])
    p.add_argument("--plugin", action="append", default=[])
    a = p.parse_args(argv)
    catalog.load_plugins(a.plugin)
    registries = {"methods": catalog.METHODS, "datasets": catalog.DATASETS, "models": catalog.MODELS}
    for kind, reg in registries.items():
        if a.kind and kind != a.kind:
            continue
        print(f"{kind}:")
        for name, doc, defaults in reg.describe():
            print(f"  {name:<20} {doc}")
            if defaults:
                print(f"  {'':<20} defaults: {json.dumps(defaults, default=str)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
