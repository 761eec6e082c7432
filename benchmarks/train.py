"""Train one trial: `python -m benchmarks.train --dataset digits --model mlp --method erm --seed 0 --out DIR`."""
from __future__ import annotations

import argparse
import json
import os
import tempfile

from molere.config import ConfigError, TrainConfig, validate

from benchmarks.sweep import safe_yaml
from .cli import Parser, bad_input_exits, check_device, existing_dir, writable_dir
from benchmarks.sweep.safe_yaml import excerpt
from benchmarks.trial.config import TrialConfig

PROG = "benchmarks.train"


def _pairs(items: list[str], flag: str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag}: expected key=value (got {excerpt(item)!r})")
        k, v = item.split("=", 1)
        try:
            out[k] = safe_yaml.loads(v)
        except ConfigError as exc:
            raise ConfigError(f"{flag} {excerpt(k, 40)}: {exc}") from None
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--root", default=None, help="dataset root folder (datasets read from disk)")
    p.add_argument("--data-opt", action="append", metavar="K=V", help="dataset option, repeatable")
    p.add_argument("--regime", default="clean", help="clean | symmetric | pair | instance | longtail")
    p.add_argument("--noise-rate", type=float, default=0.0)
    p.add_argument("--imbalance", type=float, default=1.0)
    p.add_argument("--model", default="mlp")
    p.add_argument("--model-opt", action="append", metavar="K=V", help="model option, repeatable")
    p.add_argument("--method", default="erm")
    p.add_argument("--hp", action="append", metavar="K=V", help="method hyperparameter, repeatable")
    p.add_argument("--train", action="append", metavar="K=V",
                   help=f"training setting, repeatable ({', '.join(TrainConfig.model_fields)})")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plugin", action="append", default=[], help="module registering extra methods")
    p.add_argument("--store", default=None, help="result store to look up reference (ERM) runs in")
    p.add_argument("--out", default=None, help="run directory (default: a new temporary one)")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> TrialConfig:
    train = _pairs(a.train, "--train")
    for key in ("epochs", "lr"):
        if getattr(a, key) is not None:
            train[key] = getattr(a, key)
    validate(TrainConfig, train, prefix="train")
    regime = {"kind": a.regime}
    if a.regime in ("symmetric", "pair", "instance"):
        regime["rate"] = a.noise_rate
    if a.regime == "longtail":
        regime["imbalance"] = a.imbalance
    return validate(TrialConfig, {
        "dataset": {"name": a.dataset, "root": a.root, "options": _pairs(a.data_opt, "--data-opt")},
        "regime": regime, "model": {"name": a.model, "options": _pairs(a.model_opt, "--model-opt")},
        "method": {"name": a.method, "hparams": _pairs(a.hp, "--hp")}, "train": train,
        "seed": a.seed, "plugins": a.plugin})


def main(argv=None) -> int:
    a = parse_args(argv)
    with bad_input_exits(PROG):
        cfg = config_from_args(a)
        from benchmarks.trial.config import resolve
        from benchmarks.data.load import check_dataset
        cfg = resolve(cfg)
        check_dataset(cfg.dataset)
        check_device(cfg.train.device)
        if a.store is not None:
            existing_dir(a.store, "--store", "the trials/ folder of a sweep in the result store "
                                             "(e.g. results/quickstart/trials)")
        out = writable_dir(a.out, "--out") if a.out is not None else tempfile.mkdtemp(prefix="run-")
    from benchmarks.trial.execute import run_trial
    with bad_input_exits(PROG):
        result = run_trial(cfg, out, store_root=a.store)
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in sorted(result["metrics"].items())
             if "/" in k and not k.startswith("train/epoch_time")}
    print(json.dumps(shown, indent=1))
    print(f"run directory: {os.path.abspath(out)}  ({result['wall_time_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
