"""Image settings of `benchmarks.perf` (`resnet50`, `vit_b16`, ...): every method timed by whole epochs.

Synthetic ImageNet-size data kept on the device; every method at its defaults (plus head-only and
finite_diff rows), fp32 and bf16 trainers timed by whole epochs of five batches (one meta step of LRW/MOLERE's Q = 5; MOLERE's pool pass and FSR's
refill included): training images/s, the epoch's peak memory above what the trainer held before it (CUDA),
and both as ratios to ERM of the same precision. On CPU all trainers are built side by side and timed
interleaved; on CUDA one is resident at a time (built, timed, freed: `--resident`).
"""
from __future__ import annotations

import argparse
import gc
import time

import numpy as np

from .perf_setup import FD, build, sync, synthetic_task

# image settings: name -> model; synthetic ImageNet-size data (--image-size, --classes), 5 batches a epoch
IMAGE_MODELS = {"resnet50": "timm/resnet50", "vit_b16": "timm/vit_base_patch16_224",
                "resnet18": "timm/resnet18", "vit_tiny": "timm/vit_tiny_patch16_224"}
HEAD = {"lookahead_scope": "head"}
IMAGE_EXTRA_ROWS = [("lrw, head-only", "lrw", HEAD), ("mwn, head-only", "mwn", HEAD), ("l2rw, head-only", "l2rw", HEAD),
                    ("molere, head-only", "molere", HEAD), ("molere, finite_diff", "molere", FD)]


def image_builders(name: str, a: argparse.Namespace, device: str) -> dict[tuple[str, str], object]:
    """(precision, row) -> a function building its trainer: every method of the image setting `name`, one task
    and initial weights; ERM first, each row's precisions next to each other."""
    from molere.registry import METHODS

    from .models import model_factory
    shape = (3, a.image_size, a.image_size)
    task = synthetic_task(shape, 5 * a.batch_size, a.classes, device=device)
    factory = model_factory(IMAGE_MODELS[name], a.classes, shape, {})
    rows = [(m, m, {}) for m in ["erm"] + [m for m in METHODS.names() if m != "erm"]] + IMAGE_EXTRA_ROWS
    rows = [r for r in rows if a.methods is None or r[1] in a.methods or r[1] == "erm"]
    return {(prec, lbl): (lambda m=m, hp=hp, prec=prec: build(m, hp, name, a.batch_size, device=device, precision=prec,
                                                           task=task, factory=factory))
            for lbl, m, hp in rows for prec in a.precisions}


def image_trainers(name: str, a: argparse.Namespace, device: str) -> dict[tuple[str, str], object]:
    """(precision, row) -> trainer, all built (for timing them interleaved)."""
    return {k: make() for k, make in image_builders(name, a, device).items()}


def time_one_at_a_time(builders: dict, repeats: int, warmup: int, time_limit: float | None) -> dict:
    """`time_image_epochs` row by row: each trainer is built, timed and freed (GPU memory emptied) before the
    next, so one is resident at a time. After `time_limit` seconds no new row starts (reported skipped)."""
    import torch
    deadline = None if time_limit is None else time.monotonic() + time_limit
    out = {}
    for k, make in builders.items():
        if deadline is not None and time.monotonic() > deadline:
            out[k] = {"error": "skipped (time limit)"}
            continue
        try:
            out[k] = time_image_epochs({k: make()}, repeats, warmup, None)[k]
        except torch.cuda.OutOfMemoryError:   # while building it
            out[k] = {"error": "out of memory"}
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


def time_image_epochs(trainers: dict, repeats: int, warmup: int, time_limit: float | None) -> dict:
    """Per trainer: median training images/s over whole epochs (interleaved), epoch seconds and the
    epochs' peak memory above what the trainer held before (CUDA; None on CPU). A trainer that runs out
    of GPU memory is reported as such and dropped; the others go on. After `time_limit` seconds no new
    round starts once one has been timed."""
    import torch
    deadline = None if time_limit is None else time.monotonic() + time_limit
    secs, images, peaks, failed = {k: [] for k in trainers}, {}, {}, {}
    for r in range(warmup + repeats):
        for k, t in list(trainers.items()):
            cuda = t.device.type == "cuda"
            try:
                sync(t)
                if cuda:
                    torch.cuda.reset_peak_memory_stats(t.device)
                    held = torch.cuda.memory_allocated(t.device)
                t0 = time.perf_counter()
                t.train_epoch()
                sync(t)
            except torch.cuda.OutOfMemoryError:
                failed[k] = "out of memory"
            if k in failed:
                trainers.pop(k)
                t = None
                gc.collect()
                torch.cuda.empty_cache()
                continue
            if r >= warmup:
                secs[k].append(time.perf_counter() - t0)
                images[k] = len(t.train_set)
                if cuda:
                    peak = (torch.cuda.max_memory_allocated(t.device) - held) / 2**20
                    peaks[k] = max(peaks.get(k, 0.0), peak)
        if deadline is not None and r >= warmup and time.monotonic() > deadline:
            break
    out = {}
    for k in secs:
        if k in failed:
            out[k] = {"error": failed[k]}
        elif secs[k]:
            sec = float(np.median(secs[k]))
            out[k] = {"images_per_s": images[k] / sec, "epoch_s": sec, "peak_mb": peaks.get(k), "epochs": len(secs[k])}
    return out


def print_image_table(name: str, results: dict, precisions: list[str]) -> None:
    rows = list(dict.fromkeys(lbl for _, lbl in results))
    cols = "".join(f" | {p} img/s | x ERM | {p} +peak MB | x ERM" for p in precisions)
    speed = " | bf16/fp32 img/s" if {"fp32", "bf16"} <= set(precisions) else ""
    print(f"\n| {name} row{cols}{speed} |\n|---{'|---' * (4 * len(precisions) + bool(speed))}|")
    for lbl in rows:
        cells = []
        for p in precisions:
            r, erm = results.get((p, lbl), {}), results.get((p, "erm"), {})
            if "images_per_s" not in r:
                cells += [r.get("error", "-"), "", "", ""]
                continue
            ips, mem = r["images_per_s"], r["peak_mb"]
            ratio = f"{erm['images_per_s'] / ips:.2f}" if "images_per_s" in erm else "-"
            mem_s = "-" if mem is None else f"{mem:.0f}"
            mem_r = f"{mem / erm['peak_mb']:.2f}" if mem is not None and erm.get("peak_mb") else "-"
            cells += [f"{ips:.1f}", ratio, mem_s, mem_r]
        if speed:
            a, b = results.get(("fp32", lbl), {}), results.get(("bf16", lbl), {})
            cells.append(f"{b['images_per_s'] / a['images_per_s']:.2f}"
                         if "images_per_s" in a and "images_per_s" in b else "-")
        print(f"| {lbl} | " + " | ".join(cells) + " |")




def image_setting(setting: str, a: argparse.Namespace, device: str, gpu: str | None) -> dict:
    """One image setting timed, printed and returned as its report entry; the device is emptied after it."""
    import torch
    resident = a.resident or ("one" if device == "cuda" else "all")
    if resident == "one":
        results = time_one_at_a_time(image_builders(setting, a, device), a.epoch_repeats, a.warmup_epochs,
                                     a.time_limit)
    else:
        results = time_image_epochs(image_trainers(setting, a, device), a.epoch_repeats, a.warmup_epochs,
                                    a.time_limit)
    entry = {"model": IMAGE_MODELS[setting], "image_size": a.image_size, "classes": a.classes,
             "train_images": 5 * a.batch_size, "resident": resident,
             "rows": {f"{lbl} [{prec}]": r for (prec, lbl), r in results.items()}}
    print(f"\n## {setting} ({IMAGE_MODELS[setting]}, {a.image_size}px, {a.classes} classes, batch "
          f"{a.batch_size}, {device}{', ' + gpu if gpu else ''})")
    print_image_table(setting, results, a.precisions)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()   # the next setting starts from an empty device
    return entry
