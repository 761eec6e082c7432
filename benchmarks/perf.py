"""Speed and memory of every method relative to ERM: `python -m benchmarks.perf [--json FILE]`.
How it is measured and the numbers: docs/perf.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from . import perf_trial
from .cli import Parser, at_least, bad_input_exits, check_device, positive_float, writable_file
from .perf_image import IMAGE_MODELS, image_setting
from .perf_setup import FD, FD1, SETTINGS, build, stream, sync

# torch, the registries and the models are imported in the functions that use them: `--help` stays fast

PROG = "benchmarks.perf"

# per-step rows: (label, method, hparams) with the meta update at every step
STEP_ROWS = [("erm", "erm", {}), ("mwn", "mwn", {}), ("l2rw", "l2rw", {}),
             ("lrw (Q=1)", "lrw", {"meta_every": 1}),
             ("lrw head-only (Q=1)", "lrw", {"meta_every": 1, "lookahead_scope": "head"}),
             ("fsr (head-only)", "fsr", {}), ("molere (Q=1)", "molere", {"meta_every": 1})]
STEP_ROWS += [(f"{lbl}, {name}", m, {**hp, **fd}) for name, fd in (("finite_diff", FD), ("one-sided fd", FD1))
              for lbl, m, hp in STEP_ROWS if m in ("mwn", "l2rw", "lrw", "molere")]
# the reweighting baselines of issue 21 (MBR past its burn-in; RHO-loss selects 128 of 1280 candidates)
STEP_ROWS += [("mbr", "mbr", {"burn_in": 0.0}), ("rho_loss", "rho_loss", {}), ("maple", "maple", {}),
              ("stablenet", "stablenet", {}), ("bilaw", "bilaw", {}), ("gdw", "gdw", {}), ("jtt", "jtt", {})]
# per-epoch rows beyond every method's defaults: (label, method, hparams)
EPOCH_ROWS = [("lrw head-only", "lrw", {"lookahead_scope": "head"}),
              ("lrw, finite_diff", "lrw", FD), ("lrw, one-sided fd", "lrw", FD1),
              ("molere, finite_diff", "molere", FD), ("molere, one-sided fd", "molere", FD1)]


def time_steps(trainers: dict, rounds: int, warmup: int = 5) -> dict[str, float]:
    """Median ms per real step, interleaved across trainers."""
    streams = {k: stream(t) for k, t in trainers.items()}
    times = {k: [] for k in trainers}
    for r in range(warmup + rounds):
        for k, t in trainers.items():
            batch = next(streams[k])
            sync(t)
            t0 = time.perf_counter()
            t.train_step(batch)
            sync(t)
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def time_epochs(trainers: dict, repeats: int) -> dict[str, float]:
    """Median seconds per epoch (default schedules, hooks included), interleaved across trainers."""
    times = {k: [] for k in trainers}
    for _ in range(repeats):
        for k, t in trainers.items():
            sync(t)
            t0 = time.perf_counter()
            t.train_epoch()
            sync(t)
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def step_peak_mb(method: str, hparams: dict, setting: str, batch_size: int) -> float:
    """Peak resident memory a few steps add on top of the built trainer (Linux: VmHWM reset)."""
    t = build(method, hparams, setting, batch_size)
    time_steps({"m": t}, rounds=1, warmup=0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")          # reset the high-water mark to the current resident set
    base = _status_mb("VmRSS:")
    time_steps({"m": t}, rounds=5, warmup=0)
    return _status_mb("VmHWM:") - base


def peak_memory_mb(method: str, hparams: dict, setting: str, batch_size: int, device: str) -> float:
    """CUDA: max allocated over a few steps; CPU: extra peak RSS of the steps, in a fresh process."""
    if device.startswith("cuda"):
        import torch
        t = build(method, hparams, setting, batch_size, device=device)
        torch.cuda.reset_peak_memory_stats()
        time_steps({"m": t}, rounds=5, warmup=1)
        return torch.cuda.max_memory_allocated() / 2**20
    code = ("from benchmarks.perf import step_peak_mb; "
            f"print(step_peak_mb({method!r}, {hparams!r}, {setting!r}, {batch_size}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog=PROG, description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--settings", nargs="+", default=None,
                   choices=sorted(SETTINGS) + sorted(IMAGE_MODELS) + ["trial", "meta-stream"],
                   help="default: cnn-digits mlp-digits cnn-fashion trial on CPU, resnet50 vit_b16 on CUDA "
                        "(trial: the fixed cost of one sweep trial, benchmarks.perf_trial; meta-stream: "
                        "whether a meta stream keeps up, benchmarks.perf_stream)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to time")
    p.add_argument("--batch-size", type=at_least(1), default=128, help="batch size of every setting")
    p.add_argument("--rounds", type=at_least(1), default=60, help="interleaved timed steps per method")
    p.add_argument("--epoch-repeats", type=at_least(1), default=5, help="timed epochs per method")
    p.add_argument("--threads", type=at_least(1), default=2, help="torch threads")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows")
    p.add_argument("--out", "--json", dest="out", default=None,
                   help="also write the results to this JSON file, after every table (--json: the old name)")
    p.add_argument("--trial-repeats", type=at_least(1), default=4, help="timed trials per W&B mode of the trial setting")
    g = p.add_argument_group("image settings")
    g.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"],
                   help="precisions timed side by side")
    g.add_argument("--image-size", type=at_least(8), default=224, help="synthetic image side")
    g.add_argument("--classes", type=at_least(2), default=1000, help="classes of the synthetic data")
    g.add_argument("--methods", nargs="+", default=None, help="only these methods' rows (and ERM's)")
    g.add_argument("--warmup-epochs", type=at_least(0), default=1, help="untimed epochs per trainer first")
    g.add_argument("--time-limit", type=positive_float, default=None, help="seconds per image setting: no new "
                   "timed round (row, with --resident one) starts after it")
    p.add_argument("--workers", type=at_least(0), default=2, help="meta-stream: the trial's loader workers")
    g.add_argument("--resident", choices=["all", "one"], default=None,
                   help="all trainers built and timed interleaved, or one at a time (built, timed, freed); "
                        "default: one on CUDA (a setting's 34 ViT-B trainers do not fit one GPU), all on CPU")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    from molere.config import ConfigError
    from molere.registry import METHODS

    from . import catalog  # noqa: F401  (registers the methods)
    with bad_input_exits(PROG):
        check_device(a.device, "--device", instead="auto or cpu")
        unknown = sorted(set(a.methods or ()) - set(METHODS.names()))
        if unknown:
            raise ConfigError(f"--methods: unknown {', '.join(unknown)}; allowed: {', '.join(METHODS.names())}")
        if a.out:
            writable_file(a.out, "--out")
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    settings = a.settings or (["resnet50", "vit_b16"] if device == "cuda" else
                              ["cnn-digits", "mlp-digits", "cnn-fashion", "trial"])
    torch.set_num_threads(a.threads)
    report = {"device": device, "threads": a.threads, "batch_size": a.batch_size, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "settings": {}}

    def save() -> None:   # after every table: an interrupted run keeps what it measured
        if a.out:
            with open(a.out, "w") as f:
                json.dump(report, f, indent=2)
    for setting in settings:
        if setting in IMAGE_MODELS:
            report["settings"][setting] = image_setting(setting, a, device, report["gpu"])
        elif setting == "meta-stream":   # benchmarks/perf_stream.py: does a meta stream keep up?
            from .perf_stream import meta_stream_setting
            report["settings"][setting] = meta_stream_setting(a, device)
        elif setting == "trial":
            rows = report["settings"]["trial"] = {}
            perf_trial.print_header()
            perf_trial.trial_overhead(a.trial_repeats, on_row=lambda lbl, r: (rows.update({lbl: r}),
                                                                              perf_trial.print_row(lbl, r), save()))
        else:
            report["settings"][setting] = {}
            small_setting(setting, a, device, report["settings"][setting], save)
        save()
    return 0


def small_setting(setting: str, a: argparse.Namespace, device: str, out: dict, save) -> dict:
    """The small-model setting: per-step and per-epoch times (fp32) and step memory, each table printed (and
    `save()`d) as soon as it is measured."""
    from molere.registry import METHODS

    def trainer(m, hp):
        return build(m, hp, setting, a.batch_size, device=device)
    print(f"\n## {setting}  (batch {a.batch_size}, {a.threads} threads, {device})", flush=True)
    steps = out["step_ms"] = time_steps({lbl: trainer(m, hp) for lbl, m, hp in STEP_ROWS}, a.rounds)
    print(f"{'per step, meta update every step':<34} {'median ms':>10} {'x ERM':>7}")
    for lbl, ms in steps.items():
        print(f"{lbl:<34} {ms:10.2f} {ms / steps['erm']:7.2f}", flush=True)
    save()
    rows = [(m, m, {}) for m in METHODS.names() if a.methods is None or m in a.methods or m == "erm"] + EPOCH_ROWS
    epochs = out["epoch_s"] = time_epochs({lbl: trainer(m, hp) for lbl, m, hp in rows}, a.epoch_repeats)
    print(f"{'per epoch, default schedule':<34} {'median s':>10} {'x ERM':>7}")
    for m, sec in epochs.items():
        print(f"{m:<34} {sec:10.3f} {sec / epochs['erm']:7.2f}", flush=True)
    save()
    memory = out["peak_mb"] = {}
    if not a.no_memory:
        print(f"{'peak memory of a few steps':<34} {'+peak MB':>10}")
        for lbl, m, hp in STEP_ROWS:
            memory[lbl] = peak_memory_mb(m, hp, setting, a.batch_size, device)
            print(f"{lbl:<34} {memory[lbl]:10.0f}", flush=True)
            save()
    return out


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("WANDB_SILENT", "true")
    raise SystemExit(main())
