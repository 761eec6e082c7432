"""The prepared GPU check, one command, at most 8 minutes on one GPU: `python -m benchmarks.gpu_check`.

1. `python -m benchmarks.perf --device cuda` on ResNet-50 and ViT-B/16 with synthetic ImageNet-size
   data, fp32 vs bf16 (each setting time-limited; the JSON is written after each one);
2. a two-epoch `molere` trial (bf16, whole-network look-ahead every step) of a timm ViT-Tiny on a tiny
   ImageNet-format folder (ROOT/train/<wnid>/*.JPEG, ROOT/val/<wnid>/*.JPEG) built on the fly.
Every step runs in its own process under a timeout; OUT (default gpu_check/) gets perf.json, perf.txt,
trial.txt and the trial's run directory. Exit 0 only when both steps succeeded.
`--device cpu --tiny` runs the same two steps at toy sizes (tests/test_perf.py does).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.cli import Parser, bad_input_exits, check_device, writable_dir

PROG = "benchmarks.gpu_check"
PERF_TIMEOUT_S, TRIAL_TIMEOUT_S = 360, 90   # with start-up, under 8 minutes in all


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


def run_step(name: str, cmd: list[str], log: str, timeout: float) -> bool:
    """Run `cmd`, echo and save its output; True when it exits 0 within `timeout` seconds."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        text, ok = proc.stdout + proc.stderr, proc.returncode == 0
        status = f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        ok, status = False, f"timed out after {timeout:.0f} s"
    with open(log, "w") as f:
        f.write(text)
    print(text)
    print(f"[gpu_check] {name}: {status} in {time.monotonic() - t0:.0f} s (log: {log})", flush=True)
    return ok


def main(argv=None) -> int:
    p = Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="toy sizes (for a CPU run of the same steps)")
    a = p.parse_args(argv)
    with bad_input_exits(PROG):
        check_device(a.device, "--device", instead="--device cpu --tiny")
        out = os.path.abspath(writable_dir(a.out, "--out"))
    py = [sys.executable, "-m"]
    if a.tiny:
        perf_args = ["--settings", "vit_tiny", "--image-size", "32", "--batch-size", "4", "--classes", "10",
                     "--methods", "molere", "--epoch-repeats", "1", "--warmup-epochs", "0", "--threads", "1"]
        data, trial_train = (4, 6, 2, 32), ["batch_size=8", "num_workers=0"]
    else:
        perf_args = ["--settings", "resnet50", "vit_b16", "--epoch-repeats", "5", "--time-limit", "100"]
        data, trial_train = (8, 40, 10, 64), ["batch_size=32", "num_workers=4"]
    perf_ok = run_step("perf", py + ["benchmarks.perf", "--device", a.device, "--json", os.path.join(out, "perf.json"),
                                     *perf_args], os.path.join(out, "perf.txt"), PERF_TIMEOUT_S)
    classes, train_n, val_n, size = data
    root = make_image_folder(os.path.join(out, "fake_imagenet"), classes, train_n, val_n, size)
    trial = ["benchmarks.train", "--dataset", "imagenet", "--root", root, "--data-opt", f"image_size={size}",
             "--data-opt", "val_fraction=0.1", "--model", "timm/vit_tiny_patch16_224", "--method", "molere",
             "--hp", "warmup_epochs=1", "--hp", "meta_every=1", "--epochs", "2", "--lr", "0.01",
             "--train", f"device={a.device}", "--train", "precision=bf16",
             *[x for kv in trial_train for x in ("--train", kv)], "--out", os.path.join(out, "trial")]
    trial_ok = run_step("molere trial", py + trial, os.path.join(out, "trial.txt"), TRIAL_TIMEOUT_S)
    print(f"[gpu_check] perf {'ok' if perf_ok else 'FAILED'}, molere trial {'ok' if trial_ok else 'FAILED'}; "
          f"results in {out}")
    return 0 if perf_ok and trial_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
