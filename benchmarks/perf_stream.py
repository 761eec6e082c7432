"""The `meta-stream` setting of `python -m benchmarks.perf`: does a meta stream keep up with its trainer?

MWN (a meta batch of `--batch-size` images at every step, the most demanding stream of the built-in
methods) trains the registered `cnn` on a file-backed fake ImageNet folder of JPEGs (decoded, random-resized-
cropped and flipped per item, uint8 batches normalised on arrival), its loader workers split by
`Loading.share` within `--workers`. Three measurements, each after a warm-up:
  - compute: the trainer's step with its batches already in memory (steps/s it could take);
  - supply: the meta stream drawn alone (batches/s its workers deliver);
  - in use: whole epochs with both streams from files, timing how long each step waits for each stream.
The stream keeps up when supply / compute >= 1 and the wait is a small share of the step.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from molere.config import TrainConfig
from molere.registry import METHODS
from molere.trainer import RunContext


def _trainer(root: str, a: argparse.Namespace, size: int):
    from benchmarks.data.load import DatasetConfig, load_task
    from benchmarks.data.regimes import RegimeConfig
    from benchmarks.models import model_factory
    task = load_task(DatasetConfig(name="imagenet", root=root, options={
        "image_size": size, "val_fraction": 0.25, "selection_fraction": 0}), RegimeConfig(), 0)
    torch.manual_seed(0)
    cls = METHODS.get("mwn")
    cfg = TrainConfig(epochs=1000, batch_size=a.batch_size, lr=0.05, schedule="constant", num_workers=a.workers)
    model = model_factory("cnn", task.num_classes, task.input_shape, {})()
    return cls(model, task, cfg, cls.Hparams(meta_batch_size=a.batch_size), RunContext(seed=0))


def measure(t, repeats: int) -> dict:
    """compute steps/s, meta-stream supply batches/s and the waits of each step in use (seconds)."""
    meta = t.stream("meta", "meta_set", t.hp.meta_batch_size)
    train = t.stream("train", "train_set", t.cfg.batch_size)
    mem_train, mem_meta = next(train).to(t.device), next(meta).to(t.device)
    real_meta = t.next_meta_batch
    t.next_meta_batch = lambda: (mem_meta.x, mem_meta.y)     # compute only: the batches are in memory
    for r in range(3 + repeats):
        if r == 3:
            t0 = time.perf_counter()
        t.train_step(mem_train)
    compute = repeats / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(repeats):
        next(meta)
    supply = repeats / (time.perf_counter() - t0)
    waits = {"meta": [], "train": []}

    def timed_meta():
        w0 = time.perf_counter()
        out = real_meta()
        waits["meta"].append(time.perf_counter() - w0)
        return out
    t.next_meta_batch = timed_meta
    t0 = time.perf_counter()
    for _ in range(repeats):
        w0 = time.perf_counter()
        batch = next(train)
        waits["train"].append(time.perf_counter() - w0)
        t.train_step(batch)
    step = (time.perf_counter() - t0) / repeats
    t.next_meta_batch = real_meta
    return {"compute_steps_per_s": compute, "meta_supply_batches_per_s": supply, "step_s": step,
            **{f"{k}_wait_s": float(np.median(v)) for k, v in waits.items()},
            **{f"{k}_wait_mean_s": float(np.mean(v)) for k, v in waits.items()}}


def meta_stream_setting(a: argparse.Namespace, device: str) -> dict:
    """The setting's measurements, printed as its rows; the workers each stream got are part of the result."""
    from benchmarks.gpu_check import make_image_folder
    size = a.image_size if a.image_size != 224 else 32      # the CPU default: small images, a fast trainer
    with tempfile.TemporaryDirectory() as tmp:
        root = make_image_folder(os.path.join(tmp, "in"), 10, 64, 8, int(size * 1.25))
        t = _trainer(root, a, size)
        result = {"workers": t.loading.share(t.stream_demand()), "image_size": size, "batch_size": a.batch_size,
                  **measure(t, a.rounds)}
    r = result
    print(f"\n## meta-stream (mwn, cnn, {size}px JPEGs, batch {a.batch_size}, workers {r['workers']}, {device})")
    print(f"{'compute: steps/s with batches in memory':<46} {r['compute_steps_per_s']:8.1f}")
    print(f"{'supply: meta batches/s its workers deliver':<46} {r['meta_supply_batches_per_s']:8.1f}  "
          f"(x {r['meta_supply_batches_per_s'] / r['compute_steps_per_s']:.2f} the step rate: "
          f"{'keeps up' if r['meta_supply_batches_per_s'] >= r['compute_steps_per_s'] else 'STARVES'})")
    print(f"{'in use: ms per step / median wait meta, train':<46} {1e3 * r['step_s']:8.1f}  "
          f"{1e3 * r['meta_wait_s']:.1f} / {1e3 * r['train_wait_s']:.1f} ms "
          f"(means {1e3 * r['meta_wait_mean_s']:.1f} / {1e3 * r['train_wait_mean_s']:.1f})")
    return result
