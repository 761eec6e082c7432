"""Speed and memory of every method relative to ERM: `python -m benchmarks.perf [--json FILE]`.

All trainers of one setting are built in one process from the same initial weights and timed
interleaved (one step of each in turn, repeated), so machine noise hits every method alike. Reported:
median ms per training step with the meta update every step (the meta-step cost), median seconds per
epoch with each method's default schedule (e.g. Q = 5 for LRW and MOLERE), ratios to ERM, and peak
memory of a few steps (CUDA: max allocated; CPU: the peak resident memory the steps add, measured in a
fresh process).
Train-twice methods get fixed reference margins (their ERM pass is a separate trial), MOLERE and FSR
are timed past their warm-ups (splitter active, probe set filled) and every trainer has run its first
`on_epoch_start` before a step is timed, so each row is the method's steady-state cost.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

from molere.config import TrainConfig
from molere.data import ExampleSet, TaskData
from molere.registry import METHODS
from molere.trainer import RunContext

from . import catalog  # noqa: F401
from .models import model_factory

SETTINGS = {  # name -> (model, input shape, training examples)
    "cnn-digits": ("cnn", (1, 8, 8), 1280),
    "cnn-fashion": ("cnn", (1, 28, 28), 1280),
    "mlp-digits": ("mlp", (1, 8, 8), 1280),
    "mlp-fashion": ("mlp", (1, 28, 28), 1280),
}
# per-step rows: (label, method, hparams) with the meta update at every step
STEP_ROWS = [("erm", "erm", {}), ("mwn", "mwn", {}), ("l2rw", "l2rw", {}),
             ("lrw (Q=1)", "lrw", {"meta_every": 1}),
             ("lrw head-only (Q=1)", "lrw", {"meta_every": 1, "lookahead_scope": "head"}),
             ("fsr (head-only)", "fsr", {}), ("molere (Q=1)", "molere", {"meta_every": 1})]
FD = {"hypergrad": "finite_diff"}                    # central difference
FD1 = {"hypergrad": "finite_diff", "fd_scheme": "one_sided"}
STEP_ROWS += [(f"{lbl}, {name}", m, {**hp, **fd}) for name, fd in (("finite_diff", FD), ("one-sided fd", FD1))
              for lbl, m, hp in STEP_ROWS if m in ("mwn", "l2rw", "lrw", "molere")]
# per-epoch rows beyond every method's defaults: (label, method, hparams)
EPOCH_ROWS = [("lrw head-only", "lrw", {"lookahead_scope": "head"}),
              ("lrw, finite_diff", "lrw", FD), ("lrw, one-sided fd", "lrw", FD1),
              ("molere, finite_diff", "molere", FD), ("molere, one-sided fd", "molere", FD1)]


def synthetic_task(shape: tuple, n: int, classes: int = 10, seed: int = 0) -> TaskData:
    g = torch.Generator().manual_seed(seed)

    def make(m, offset):
        y = torch.arange(m) % classes
        return ExampleSet(y, x=torch.rand(m, *shape, generator=g), ids=torch.arange(m) + offset)
    return TaskData("perf", train=make(n, 0), val=make(n // 5, n), test=make(256, 2 * n),
                    num_classes=classes, input_shape=shape)


class FixedReference:
    """Stands in for a stored ERM run: fixed random margins, so no ERM pass is timed or trained."""

    def __init__(self, task: TaskData):
        ids = torch.cat([task.train.ids, task.val.ids]).numpy()
        self.margins = (ids, np.random.default_rng(0).uniform(-1, 1, len(ids)))

    def erm_pool_margins(self):
        return self.margins


def build(method: str, hparams: dict, setting: str, batch_size: int, epochs: int = 1000):
    """A trainer on a synthetic task of the setting's shape; MOLERE starts past its warm-up."""
    arch, shape, n = SETTINGS[setting]
    task = synthetic_task(shape, n)
    factory = model_factory(arch, task.num_classes, shape, {})
    torch.manual_seed(0)
    cls = METHODS.get(method)
    hparams = {"warmup_epochs": 0, **hparams}
    hp = cls.Hparams.model_validate({k: v for k, v in hparams.items() if k in cls.Hparams.model_fields})
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.05, schedule="constant")
    context = RunContext(seed=0, model_factory=factory, reference=FixedReference(task))
    trainer = cls(factory(), task, cfg, hp, context)
    trainer.on_epoch_start(0)   # steady state before any step is timed (e.g. FSR's probe set, MOLERE's split)
    return trainer


def _stream(trainer):
    while True:
        yield from trainer.train_set.batches(trainer.cfg.batch_size, shuffle=True, generator=trainer.generator,
                                             drop_last=True)


def time_steps(trainers: dict, rounds: int, warmup: int = 5) -> dict[str, float]:
    """Median ms per real step, interleaved across trainers."""
    streams = {k: _stream(t) for k, t in trainers.items()}
    times = {k: [] for k in trainers}
    for r in range(warmup + rounds):
        for k, t in trainers.items():
            batch = next(streams[k])
            t0 = time.perf_counter()
            t.train_step(batch)
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def time_epochs(trainers: dict, repeats: int) -> dict[str, float]:
    """Median seconds per epoch (default schedules, hooks included), interleaved across trainers."""
    times = {k: [] for k in trainers}
    for _ in range(repeats):
        for k, t in trainers.items():
            t0 = time.perf_counter()
            t.train_epoch()
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
        t = build(method, hparams, setting, batch_size)
        torch.cuda.reset_peak_memory_stats()
        time_steps({"m": t}, rounds=5, warmup=1)
        return torch.cuda.max_memory_allocated() / 2**20
    code = ("from benchmarks.perf import step_peak_mb; "
            f"print(step_peak_mb({method!r}, {hparams!r}, {setting!r}, {batch_size}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.perf", description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=["cnn-digits", "mlp-digits", "cnn-fashion"],
                   choices=sorted(SETTINGS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=60, help="interleaved timed steps per method")
    p.add_argument("--epoch-repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = {"device": device, "threads": a.threads, "batch_size": a.batch_size, "torch": torch.__version__,
              "settings": {}}
    for setting in a.settings:
        steps = time_steps({lbl: build(m, hp, setting, a.batch_size) for lbl, m, hp in STEP_ROWS}, a.rounds)
        rows = [(m, m, {}) for m in METHODS.names()] + EPOCH_ROWS
        epochs = time_epochs({lbl: build(m, hp, setting, a.batch_size) for lbl, m, hp in rows}, a.epoch_repeats)
        memory = {} if a.no_memory else {lbl: peak_memory_mb(m, hp, setting, a.batch_size, device)
                                         for lbl, m, hp in STEP_ROWS}
        report["settings"][setting] = {"step_ms": steps, "epoch_s": epochs, "peak_mb": memory}
        print(f"\n## {setting}  (batch {a.batch_size}, {a.threads} threads, {device})")
        print(f"{'per step, meta update every step':<34} {'median ms':>10} {'x ERM':>7} {'+peak MB':>9}")
        for lbl, ms in steps.items():
            mem = f"{memory[lbl]:9.0f}" if lbl in memory else f"{'-':>9}"
            print(f"{lbl:<34} {ms:10.2f} {ms / steps['erm']:7.2f} {mem}")
        print(f"{'per epoch, default schedule':<34} {'median s':>10} {'x ERM':>7}")
        for m, sec in epochs.items():
            print(f"{m:<34} {sec:10.3f} {sec / epochs['erm']:7.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
