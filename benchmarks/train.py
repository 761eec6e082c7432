"""Train one trial: `python -m benchmarks.train --dataset digits --model mlp --method erm --seed 0 --out DIR`,
or rerun a sweep's trial exactly: `python -m benchmarks.train --config results/SWEEP/trials/ID --out DIR`
(its config, and its thread count unless --cpus says otherwise: `benchmarks.trial.execute.trial_threads`)."""
from __future__ import annotations

import argparse
import json
import os
import tempfile

from molere.config import ConfigError, TrainConfig, validate

from benchmarks.sweep import safe_yaml
from .cli import bad_input_exits
from benchmarks.sweep.safe_yaml import excerpt
from benchmarks.trial.config import TrialConfig


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
    p = argparse.ArgumentParser(prog="benchmarks.train", description=__doc__)
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
    p.add_argument("--config", default=None, metavar="TRIAL",
                   help="a sweep trial's directory (or its config.json): rerun that trial (other flags ignored)")
    p.add_argument("--cpus", type=float, default=None,
                   help="CPUs of the trial = its torch threads (default: the trial's recorded count with --config, "
                        "else 1, a sweep's default resources.cpu)")
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


def from_trial(path: str) -> tuple[TrialConfig, float | None]:
    """The configuration of a sweep trial (its directory or config.json) and its recorded thread count."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(file) as f:
            raw = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--config: cannot read {excerpt(file)} ({type(exc).__name__}); give a trial directory "
                          "or its config.json") from None
    threads = None
    try:
        with open(os.path.join(folder, "result.json")) as f:
            threads = json.load(f).get("threads")
    except (OSError, ValueError):
        pass
    return validate(TrialConfig, raw.get("config", raw), prefix="--config"), threads


def main(argv=None) -> int:
    a = parse_args(argv)
    with bad_input_exits("benchmarks.train"):
        cfg, threads = from_trial(a.config) if a.config else (config_from_args(a), None)
        cpus = a.cpus if a.cpus is not None else threads
        store = a.store or (os.path.dirname(os.path.abspath(a.config.rstrip("/"))) if a.config and
                            os.path.isdir(a.config) else None)   # a sweep trial reuses its store's ERM runs
        from benchmarks.trial.config import resolve
        from benchmarks.data.load import check_dataset
        cfg = resolve(cfg)
        check_dataset(cfg.dataset)
        if a.out is not None and os.path.exists(a.out) and not os.path.isdir(a.out):
            raise ConfigError(f"--out: {excerpt(a.out)} is a file; give a folder for the run directory")
    from benchmarks.trial.execute import run_trial
    out = a.out or tempfile.mkdtemp(prefix="run-")
    with bad_input_exits("benchmarks.train"):
        result = run_trial(cfg, out, store_root=store, cpus=cpus)
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in sorted(result["metrics"].items())
             if "/" in k and not k.startswith("train/epoch_time")}
    print(json.dumps(shown, indent=1))
    print(f"run directory: {os.path.abspath(out)}  ({result['wall_time_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
