"""Declared protocol per comparison (docs/protocol.md): every shipped sweep sets the meta set of each baseline
explicitly, and the report's method label shows it."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import catalog
from benchmarks.report import methods as MC
from benchmarks.sweep.safe_yaml import load_file

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


def declares_meta_set(method: str) -> tuple[str, ...]:
    """The fields a sweep must set for `method`: its meta set's source and labels (baselines with one)."""
    fields = catalog.METHODS.get(method).Hparams.model_fields
    if "meta_source" in fields:
        return tuple(f for f in ("meta_source", "meta_labels") if f in fields)
    return ("meta_labels",) if "probe_per_class" in fields else ()


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_sweep_declares_each_baselines_meta_set(path):
    methods = load_file(path).get("methods") or {}
    for name, hp in methods.items():
        if name == "*" or name not in catalog.METHODS:
            continue
        missing = [f for f in declares_meta_set(name) if f not in (hp or {})]
        assert not missing, f"{path.name}: methods.{name} does not set {missing} (docs/protocol.md)"


def test_the_quickstart_declares_something_to_check():
    methods = load_file(SWEEPS[[p.name for p in SWEEPS].index("quickstart.yaml")])["methods"]
    assert {m for m in methods if declares_meta_set(m)} >= {"mwn", "l2rw", "fsr"}


@pytest.mark.parametrize("hparams,expected", [
    ({"meta_labels": "observed", "meta_source": "val"}, "observed-label meta set, val split"),
    ({"meta_labels": "true", "meta_source": "train_per_class", "meta_per_class": 10}, "clean meta set, 10/class of train"),
    ({"meta_labels": "observed", "probe_per_class": 10}, "probe set from train"),
    ({"meta_labels": "true"}, "true-label validation set"),     # LRW / MOLERE with the oracle
    ({"meta_labels": "observed"}, ""),                         # their own validation set: nothing to declare
    ({}, "")])
def test_meta_set_description(hparams, expected):
    assert MC.meta_set(hparams) == expected


def test_labels_show_the_declared_meta_set():
    mc = MC.Methods.from_plan([{"labels": {"method": "l2rw"}}, {"labels": {"method": "erm"}}])
    mc.declare({"l2rw": MC.meta_set({"meta_labels": "true", "meta_source": "train_per_class", "meta_per_class": 10}),
                "erm": ""})
    assert mc.label("l2rw") == "L2RW (clean meta set, 10/class of train)" and mc.label("erm") == "ERM"
