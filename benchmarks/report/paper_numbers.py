"""The paper's reported numbers (paper_numbers.yaml, with provenance) as long-form frames, and the maps from
its method and dataset names to this harness's.

    result_names() -> ["figure1", "figure2", "table2", "table3", "table4", "margins"]
    frame("figure1") -> DataFrame[result, panel, row, column, value, std, approx, text, provenance]
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

PATH = Path(__file__).with_name("paper_numbers.yaml")
COLUMNS = ["result", "panel", "row", "column", "value", "std", "approx", "text", "provenance"]


@functools.lru_cache(maxsize=1)
def load() -> dict:
    return yaml.safe_load(PATH.read_text())


def result_names() -> list[str]:
    return list(load()["results"])


def result(name: str) -> dict:
    return load()["results"][name]


@dataclass(frozen=True)
class Value:
    value: float
    std: float | None = None
    approx: bool = False
    text: str = ""


_RANGE = re.compile(r"^(-?[\d.]+)\s*[–-]\s*(-?[\d.]+)$")


def parse(raw) -> Value:
    """12.3 | "≈0.07" (approximate) | "0.03–0.05" (a range: its midpoint, approximate) | "40.11 ± 0.9"."""
    text = str(raw).strip()
    if isinstance(raw, (int, float)):
        return Value(float(raw), text=text)
    if text.startswith("≈"):
        return Value(float(text[1:]), approx=True, text=text)
    if "±" in text:
        mean, std = (float(t) for t in text.split("±"))
        return Value(mean, std, text=text)
    m = _RANGE.match(text)
    if m:
        return Value((float(m[1]) + float(m[2])) / 2, approx=True, text=text)
    raise ValueError(f"{PATH.name}: cannot read the value {text!r}")


def method_of(label: str) -> str | None:
    """The registered method measuring the paper's method `label` (None: not in the map)."""
    return load()["methods"].get(label)


def labels_of(method: str) -> list[str]:
    """The paper's labels of a registered method (e.g. erm_train_val -> ERM (IN1K+INR), ERM (IN1K+INA))."""
    return [k for k, v in load()["methods"].items() if v == method]


def dataset_of(row: str) -> dict | None:
    """{dataset, metric, setting} of a paper row (e.g. 'DR (country shift)'), None when it is no dataset."""
    return load()["datasets"].get(row)


def paper_rows_of(dataset: str, metric: str = "test/acc") -> list[str]:
    """The paper rows our `dataset` / `metric` measures (e.g. retinopathy, aptos/acc -> DR (country shift))."""
    return [k for k, v in load()["datasets"].items() if v["dataset"] == dataset and v["metric"] == metric]


def _rows(name: str, spec: dict):
    """(panel, row, column, raw value) of one result, whatever its layout."""
    if "panels" in spec or "blocks" in spec:
        for panel, block in (spec.get("panels") or spec["blocks"]).items():
            cols = block.get("methods") or list(block["columns"])
            for row, values in block["rows"].items():
                yield from ((panel, row, c, v) for c, v in zip(cols, values))
    elif name == "table2":
        for row, values in spec["rows"].items():
            yield from (("", row, c, v) for c, v in zip(spec["columns"], values))
    elif name == "table3":
        for row, values in spec["rows"].items():
            yield from (("", row, c, v) for c, v in zip(spec["methods"], values))
    elif name == "margins":
        for row, stats in spec["mean_delta"].items():
            yield from (("mean_delta", row, k, v) for k, v in stats.items())
        for row, by_method in spec["per_bin"].items():
            for method, values in by_method.items():
                yield from ((f"per_bin {method}", row, c, v) for c, v in zip(spec["bins"], values))


def frame(name: str) -> pd.DataFrame:
    """Every value of result `name`, one row each (margins: all approximate, as read from the figure)."""
    return _frame(name).copy()


@functools.lru_cache(maxsize=None)
def _frame(name: str) -> pd.DataFrame:
    spec = result(name)
    rows = []
    for panel, row, col, raw in _rows(name, spec):
        v = parse(raw)
        rows.append({"result": name, "panel": panel, "row": row, "column": str(col), "value": v.value,
                     "std": v.std, "approx": v.approx or name == "margins", "text": v.text,
                     "provenance": spec["provenance"]})
    return pd.DataFrame(rows, columns=COLUMNS)


def value(name: str, row: str, column: str, panel: str | None = None) -> Value | None:
    """One paper value, or None when the paper reports none there."""
    f = _frame(name)
    hit = f[(f["row"] == row) & (f["column"] == str(column)) & ((f["panel"] == panel) if panel is not None else True)]
    if hit.empty:
        return None
    r = hit.iloc[0]
    return Value(float(r["value"]), None if pd.isna(r["std"]) else float(r["std"]), bool(r["approx"]), r["text"])
