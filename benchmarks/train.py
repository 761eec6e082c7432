"""Train one trial: `python -m benchmarks.train --dataset digits --model mlp --method erm --seed 0 [--out DIR]`,
or rerun a sweep's trial exactly: `python -m benchmarks.train --config results/SWEEP/trials/ID` (its config and
its thread count unless --cpus says otherwise: `benchmarks.trial.execute.trial_threads`).

Prints its run folder first, then one line per epoch (loss, lr, accuracies, images/s, ETA; a step bar on
a terminal). The run is checkpointed at every epoch end: rerun the same command on the same folder and it
resumes from the checkpoint; a finished run, or a folder holding another run, is left alone unless
--force. It logs to W&B like a sweep trial (one run, offline without an API key; --wandb-mode disabled:
none). Bad input: one line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import os

from molere.config import ConfigError, TrainConfig, validate

from .cli import Parser
from benchmarks.sweep.safe_yaml import excerpt

PROG = "benchmarks.train"
RUNS_DIR = "runs"


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = lambda text: text + " (default: %(default)s)"   # noqa: E731
    p.add_argument("--dataset", default="digits", help=d("dataset name (`python -m benchmarks.list datasets`)"))
    p.add_argument("--root", default=None, help=d("dataset root folder, for datasets read from disk"))
    p.add_argument("--data-opt", action="append", default=[], metavar="K=V", help="dataset option, repeatable")
    p.add_argument("--regime", default="clean", help=d("label regime: clean | symmetric | pair | instance | longtail"))
    p.add_argument("--noise-rate", type=float, default=0.0, help=d("label-noise rate of symmetric/pair/instance"))
    p.add_argument("--imbalance", type=float, default=1.0, help=d("imbalance ratio of longtail"))
    p.add_argument("--model", default="mlp", help=d("model name (`python -m benchmarks.list models`)"))
    p.add_argument("--model-opt", action="append", default=[], metavar="K=V", help="model option, repeatable")
    p.add_argument("--method", default="erm", help=d("method name (`python -m benchmarks.list methods`)"))
    p.add_argument("--hp", action="append", default=[], metavar="K=V",
                   help="method hyperparameter, repeatable (`python -m benchmarks.list methods NAME`)")
    p.add_argument("--train", action="append", default=[], metavar="K=V",
                   help=f"training setting, repeatable: {', '.join(TrainConfig.model_fields)}")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"shorthand for --train epochs=N (default: {TrainConfig.model_fields['epochs'].default})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"shorthand for --train lr=X (default: {TrainConfig.model_fields['lr'].default})")
    p.add_argument("--seed", type=int, default=0, help=d("trial seed (model init, noise draw, data order)"))
    p.add_argument("--plugin", action="append", default=[], help="module registering extra methods, repeatable")
    p.add_argument("--results", "--store", dest="results", default=None,
                   help=d("result store (a sweep's trials/ folder) to take the reference ERM run from "
                          "(train-twice methods); --store is the old name"))
    p.add_argument("--out", default=None,
                   help=f"run folder (default: {RUNS_DIR}/<dataset>-<regime>-<method>-seed<N>-<trial id>)")
    p.add_argument("--force", action="store_true",
                   help="train from scratch even if --out holds a finished run, another run or a checkpoint")
    p.add_argument("--wandb-mode", default="auto", choices=("auto", "offline", "online", "disabled"),
                   help=d("W&B logging; auto: online with an API key, else offline (runs under <out>/wandb)"))
    p.add_argument("--wandb-project", default="molere-bench", help=d("W&B project"))
    p.add_argument("--config", default=None, metavar="TRIAL",
                   help="a sweep trial's folder (or its config.json): rerun that trial (the flags that describe "
                        "a trial are ignored; its store's ERM runs are reused)")
    p.add_argument("--cpus", type=float, default=None,
                   help="CPUs of the trial = its torch threads (default: the trial's recorded count with --config, "
                        "else 1, a sweep's default resources.cpu)")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace):
    from benchmarks.cli_values import options_model, pairs
    from benchmarks.trial.config import TrialConfig
    train = pairs(a.train, "--train", TrainConfig)
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
        "dataset": {"name": a.dataset, "root": a.root, "options": pairs(
            a.data_opt, "--data-opt", options_model("dataset", a.dataset))},
        "regime": regime, "model": {"name": a.model, "options": pairs(
            a.model_opt, "--model-opt", options_model("model", a.model))},
        "method": {"name": a.method, "hparams": pairs(
            a.hp, "--hp", options_model("method", a.method, a.plugin))}, "train": train,
        "seed": a.seed, "plugins": a.plugin})


def from_trial(path: str) -> tuple:
    """The configuration of a sweep trial (its folder or config.json) and its recorded thread count."""
    from benchmarks.trial.config import TrialConfig
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(file) as f:
            raw = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--config: cannot read {excerpt(file)} ({type(exc).__name__}); give a trial folder "
                          "or its config.json") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config: {excerpt(file)} is not a trial's config.json (a JSON object)")
    threads = None
    try:
        with open(os.path.join(folder, "result.json")) as f:
            threads = json.load(f).get("threads")
    except (OSError, ValueError, AttributeError):
        pass
    return validate(TrialConfig, raw.get("config", raw), prefix="--config"), threads


def prepare_folder(out: str, tid: str, force: bool) -> str:
    """What a rerun on `out` does: "new", "resume" (a checkpoint of this trial) or "restart" (--force);
    raises ConfigError (one line) for a finished run or another run's folder without --force."""
    from benchmarks.trial.store import RunDir
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out: {excerpt(out)} is a file; give a folder for the run")
    run = RunDir(out)
    if not run.file("config.json").exists():
        return "new"
    try:
        old = run.config().get("trial_id")
    except (OSError, ValueError):
        old = None
    if force:
        for name in ("checkpoint.pt", "metrics.jsonl"):
            run.file(name).unlink(missing_ok=True)
        import shutil
        shutil.rmtree(run.file("wandb"), ignore_errors=True)
        return "restart"
    if old != tid:
        raise ConfigError(f"--out: {excerpt(out)} holds another run (trial {old}); give another --out, or --force to "
                          "replace it")
    if run.status == "done":
        acc = run.result().get("metrics", {}).get("test/acc")
        shown = f"test acc {100 * acc:.2f}" if isinstance(acc, (int, float)) else "no test acc"
        raise ConfigError(f"--out: {excerpt(out)} holds this run, finished ({shown}); --force trains it again")
    return "resume" if run.file("checkpoint.pt").exists() else "new"


def trial_spec(cfg, out: str, a: argparse.Namespace, cpus: float | None) -> dict:
    """The sweep worker's spec of this run (same W&B logging, store, checkpoints and thread policy as a sweep
    trial)."""
    from benchmarks.data.regimes import regime_label
    from benchmarks.sweep.plan import hparams_id
    from benchmarks.trial.config import erm_reference_config, trial_id
    from benchmarks.wandb_io.log import git_commit, resolve_mode
    tid, out = trial_id(cfg), os.path.abspath(out)
    store = os.path.abspath(a.results) if a.results else None
    labels = {"dataset": cfg.dataset.name, "regime": regime_label(cfg.regime), "method": cfg.method.name,
              "seed": cfg.seed, "hparams_id": hparams_id(cfg.method.hparams)}
    wandb = {"project": a.wandb_project, "entity": None, "mode": resolve_mode(a.wandb_mode), "dir": out,
             "git": git_commit()}
    return {"trial_id": tid, "labels": labels, "sweep": PROG, "config": cfg.model_dump(mode="json"),
            "out_dir": out, "store_root": store,
            "erm_dir": os.path.join(store, trial_id(erm_reference_config(cfg))) if store else out,
            "checkpoint": True, "cpu": cpus, "wandb": wandb}


def main(argv=None) -> int:
    a = parse_args(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    from benchmarks.cli import bad_input_exits, check_device, existing_dir, writable_dir
    with bad_input_exits(PROG):
        from benchmarks.data.load import check_dataset
        from benchmarks.data.regimes import regime_label
        from benchmarks.trial.config import resolve, trial_id
        cfg, threads = from_trial(a.config) if a.config else (config_from_args(a), None)
        cfg = resolve(cfg)
        if a.config and not a.results and os.path.isdir(a.config):   # a sweep trial reuses its store's ERM runs
            a.results = os.path.dirname(os.path.abspath(a.config.rstrip("/")))
        check_dataset(cfg.dataset)
        check_device(cfg.train.device)
        if a.results is not None:
            existing_dir(a.results, "--results", "the trials/ folder of a sweep in the result store "
                                                 "(e.g. results/quickstart/trials)")
        tid = trial_id(cfg)
        name = f"{cfg.dataset.name}-{regime_label(cfg.regime)}-{cfg.method.name}-seed{cfg.seed}-{tid[:8]}"
        out = a.out or os.path.join(RUNS_DIR, name)
        how = prepare_folder(out, tid, a.force)
        writable_dir(out, "--out")
        spec = trial_spec(cfg, out, a, a.cpus if a.cpus is not None else threads)
    print(f"run folder: {spec['out_dir']}" + {"new": "", "resume": " (resuming from its checkpoint)",
                                              "restart": " (--force: from scratch)"}[how], flush=True)
    from benchmarks.sweep.worker import run_in_process
    from benchmarks.trial.console import ConsoleProgress
    from benchmarks.trial.store import RunDir
    with bad_input_exits(PROG):
        run_in_process(spec, callbacks=(ConsoleProgress(cfg.train.epochs),))
    result = RunDir(out).result()
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in sorted(result["metrics"].items())
             if "/" in k and not k.startswith("train/epoch_time")}
    print(json.dumps(shown, indent=1))
    print(f"run folder: {spec['out_dir']}  ({result['wall_time_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
