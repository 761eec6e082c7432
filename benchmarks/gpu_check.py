"""The prepared GPU check, one command, at most 8 minutes on one GPU: `python -m benchmarks.gpu_check`.

1. `python -m benchmarks.perf --device cuda` on ResNet-50 and ViT-B/16 with synthetic ImageNet-size data,
   fp32 vs bf16, one trainer resident at a time (built, timed, freed), ERM first; each setting stops
   starting rows after its time limit (the rest are reported as skipped); the JSON is written after each;
2. a two-epoch `molere` trial (bf16, whole-network look-ahead every step) of a timm ViT-Tiny on a tiny
   ImageNet-format folder (ROOT/train/<wnid>/*.JPEG, ROOT/val/<wnid>/*.JPEG) built on the fly.
Every step runs in its own process group under a timeout that fits the 8 minutes (`BUDGET_S`); its stdout
and stderr go to OUT/<step>.log as they are written, so a step that times out keeps both. A summary table
(OUT/summary.md) is printed at the end whatever happened. Exit 0 only when both steps succeeded.
`--device cpu --tiny` runs the same steps at toy sizes (tests/test_perf.py does).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from benchmarks.cli import Parser, bad_input_exits, check_device, writable_dir

PROG = "benchmarks.gpu_check"
BUDGET_S = 480                                  # the whole check, start-up included
PERF_TIMEOUT_S, TRIAL_TIMEOUT_S = 330, 120      # per step; the rest is start-up, the fake folder and the summary
PERF_SETTING_LIMIT_S = 140                      # per perf setting: no new row starts after it


def make_image_folder(root: str, classes: int, train_per_class: int, val_per_class: int, size: int,
                      seed: int = 0) -> str:
    """A tiny ImageFolder tree of JPEGs whose mean colour depends on the class (a learnable signal)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = os.path.join(root, split, f"n{c:08d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                img = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
                img[..., c % 3] += np.uint8(60 + 40 * (c // 3 % 3))
                Image.fromarray(img).save(os.path.join(folder, f"{split}_{c}_{i}.JPEG"), quality=90)
    return root


def run_step(name: str, cmd: list[str], log: str, timeout: float) -> dict:
    """Run `cmd` in its own process group, its stdout and stderr written to `log` as they come; on timeout the
    whole group is stopped and the log keeps what it wrote. Returns {step, status, ok, seconds, log}."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})   # a killed step keeps its lines
        try:
            code = proc.wait(timeout=timeout)
            status, ok = f"exit {code}", code == 0
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status, ok = f"timed out after {timeout:.0f} s", False
    seconds = time.monotonic() - t0
    with open(log, "a") as f:
        f.write(f"\n[gpu_check] {name}: {status} in {seconds:.0f} s\n")
    with open(log) as f:
        print(f.read()[-4000:], flush=True)
    return {"step": name, "status": status, "ok": ok, "seconds": seconds, "log": log}


def perf_facts(path: str) -> list[str]:
    """One line per perf setting: ERM images/s per precision and how many rows ran, failed or were skipped."""
    try:
        report = json.load(open(path))
    except (OSError, ValueError):
        return ["perf: no results written"]
    out = []
    for name, s in report.get("settings", {}).items():
        rows = s.get("rows", {})
        erm = ", ".join(f"{k.split('[')[1][:-1]} {v['images_per_s']:.0f} img/s" for k, v in rows.items()
                        if k.startswith("erm [") and "images_per_s" in v)
        errors = [v["error"] for v in rows.values() if "error" in v]
        out.append(f"perf {name} ({report.get('gpu') or report.get('device')}): ERM {erm or '-'}; "
                   f"{len(rows) - len(errors)} rows timed, {sum('memory' in e for e in errors)} out of memory, "
                   f"{sum('skipped' in e for e in errors)} skipped")
    return out


def trial_facts(run_dir: str) -> list[str]:
    try:
        result = json.load(open(os.path.join(run_dir, "result.json")))
    except (OSError, ValueError):
        try:
            epochs = sum(1 for line in open(os.path.join(run_dir, "metrics.jsonl")) if line.strip())
        except OSError:
            epochs = 0
        return [f"molere trial: no result written ({epochs} epoch(s) recorded in {run_dir}/metrics.jsonl)"]
    m = result.get("metrics", {})
    return [f"molere trial: {m.get('epoch')} epochs in {result.get('wall_time_s', float('nan')):.0f} s, "
            f"test/acc {m.get('test/acc', float('nan')):.3f}, splitter active: {m.get('split/warmup') == 0.0}"]


def summary(steps: list[dict], out: str, total: float) -> str:
    lines = ["| step | status | seconds | log |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {s['log']} |" for s in steps]
    lines += ["", *perf_facts(os.path.join(out, "perf.json")), *trial_facts(os.path.join(out, "trial")),
              f"total {total:.0f} s (budget {BUDGET_S} s)"]
    text = "\n".join(lines)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text + "\n")
    return text


def commands(a: argparse.Namespace, out: str) -> tuple[list[str], list[str], tuple]:
    """The perf and trial command lines (and the fake folder's sizes) of a full or `--tiny` check."""
    py = [sys.executable, "-m"]
    if a.tiny:
        perf_args = ["--settings", "vit_tiny", "--image-size", "32", "--batch-size", "4", "--classes", "10",
                     "--methods", "molere", "--epoch-repeats", "1", "--warmup-epochs", "0", "--threads", "1",
                     "--resident", "one"]
        data, trial_train = (4, 6, 2, 32), ["batch_size=8", "num_workers=0"]
    else:
        perf_args = ["--settings", "resnet50", "vit_b16", "--epoch-repeats", "3", "--time-limit",
                     str(PERF_SETTING_LIMIT_S), "--resident", "one"]
        data, trial_train = (8, 40, 10, 64), ["batch_size=32", "num_workers=4"]
    perf = py + ["benchmarks.perf", "--device", a.device, "--json", os.path.join(out, "perf.json"), *perf_args]
    classes, train_n, val_n, size = data
    root = os.path.join(out, "fake_imagenet")
    trial = py + ["benchmarks.train", "--dataset", "imagenet", "--root", root, "--data-opt", f"image_size={size}",
                  "--data-opt", "val_fraction=0.1", "--model", "timm/vit_tiny_patch16_224", "--method", "molere",
                  "--hp", "meta_warmup_epochs=1", "--hp", "meta_every=1", "--epochs", "2", "--lr", "0.01",
                  "--train", f"device={a.device}", "--train", "precision=bf16",
                  *[x for kv in trial_train for x in ("--train", kv)], "--out", os.path.join(out, "trial")]
    return perf, trial, data


def main(argv=None) -> int:
    p = Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="toy sizes (for a CPU run of the same steps)")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    with bad_input_exits(PROG):
        check_device(a.device, "--device", instead="--device cpu --tiny")
        out = os.path.abspath(writable_dir(a.out, "--out"))
    perf, trial, (classes, train_n, val_n, size) = commands(a, out)
    slack = 3 if a.tiny else 1   # the CPU twin runs on shared, slower CPUs; the 8 minutes are the GPU's
    steps = [run_step("perf", perf, os.path.join(out, "perf.log"), slack * PERF_TIMEOUT_S)]
    make_image_folder(os.path.join(out, "fake_imagenet"), classes, train_n, val_n, size)
    steps.append(run_step("molere trial", trial, os.path.join(out, "trial.log"), slack * TRIAL_TIMEOUT_S))
    print(summary(steps, out, time.monotonic() - t0), flush=True)
    return 0 if all(s["ok"] for s in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
