"""Command-line values typed by the field they set (benchmarks.cli_values): --hp / --train / --data-opt /
--model-opt of benchmarks.train and --set of benchmarks.run."""
from __future__ import annotations

from typing import Literal

import pytest

from benchmarks.cli_values import UNKNOWN, typed_value
from benchmarks.sweep.schema import load_sweep
from benchmarks.train import config_from_args, parse_args
from benchmarks.trial.config import resolve
from molere.config import ConfigError


@pytest.mark.parametrize("text,annotation,expected", [
    ("true", bool, True),
    ("true", Literal["observed", "true"], "true"),     # YAML's boolean is not allowed, the text is
    ("1.5", float, 1.5),
    ("1.5", str, "1.5"),
    ("12", str | None, "12"),
    ("null", float | None, None),
    ("0.1", UNKNOWN, 0.1),                              # no known field: plain YAML
    ("[1, 2]", list[int], [1, 2]),
    ("maybe", bool, "maybe"),                           # taken neither way: passed on for the validator to name
])
def test_typed_value(text, annotation, expected):
    got = typed_value(text, annotation)
    assert got == expected and type(got) is type(expected)


def train_config(*argv):
    return resolve(config_from_args(parse_args(list(argv))))


def test_train_cli_values_follow_their_field_types():
    cfg = train_config("--method", "l2rw", "--hp", "meta_labels=true", "--hp", "meta_batch_size=32",
                       "--train", "grad_clip=null", "--train", "guard.stop=false", "--train", "guard.loss_ratio=3",
                       "--dataset", "mnist1d", "--data-opt", "num_samples=1000", "--model-opt", "hidden=[8]")
    assert cfg.method.hparams["meta_labels"] == "true" and cfg.method.hparams["meta_batch_size"] == 32
    assert cfg.train.grad_clip is None and cfg.train.guard.stop is False and cfg.train.guard.loss_ratio == 3.0
    assert cfg.dataset.options == {"num_samples": 1000} and cfg.model.options == {"hidden": [8]}


def test_a_value_no_field_takes_is_still_reported_with_its_field():
    with pytest.raises(ConfigError, match="meta_labels"):
        train_config("--method", "l2rw", "--hp", "meta_labels=maybe")
    with pytest.raises(ConfigError, match="--train guard.stop.*give it once"):
        train_config("--train", "guard=1", "--train", "guard.stop=false")


def test_sweep_set_values_follow_their_field_types():
    sweep = load_sweep("sweeps/embedded.yaml", [
        "methods.l2rw.meta_labels=true", "methods.fsr.train.epochs=3", "datasets.mnist1d.options.num_samples=1000",
        "wandb.project=2024", "train.guard.patience=3", "regimes.1.rate=0.2"])
    assert sweep.methods["l2rw"]["meta_labels"] == "true" and sweep.methods["fsr"]["train"]["epochs"] == 3
    assert sweep.datasets[1].options["num_samples"] == 1000 and sweep.wandb.project == "2024"
    assert sweep.train.guard.patience == 3 and sweep.regimes[1].rate == 0.2
