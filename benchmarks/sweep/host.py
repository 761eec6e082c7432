"""Can this machine feed the sweep's trials? Shared memory (/dev/shm) and memory for the data-loader workers
of the trials that run side by side, checked in the driver before Ray starts: one line naming the setting to
change, exit 2. Only file-backed datasets use workers; a cluster's nodes are not seen from here (skipped).
Set MOLERE_SKIP_HOST_CHECK=1 to skip it (docs/sweeps.md#feeding-the-gpus).
"""
from __future__ import annotations

import math
import os

from molere.config import ConfigError
from molere.data import Loading

SHM = "/dev/shm"
EVAL_BATCH = 512     # Trainer.outputs' batch: an evaluation pass holds prefetch x workers of these
WORKER_MB = 100      # private memory one loader worker adds (measured 18 MB after start-up; docs/perf.md)


def local_resources() -> dict[str, float]:
    """This machine's CPUs and GPUs (what a local Ray offers the trials)."""
    import torch
    return {"cpu": float(os.cpu_count() or 1), "gpu": float(torch.cuda.device_count())}


def check_resources(sweep, have: dict[str, float], where: str) -> None:
    """One line when a trial asks for more CPUs/GPUs than `have` (the machine or the cluster) offers."""
    asked = {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu}
    short = [k for k, v in asked.items() if v > have.get(k, 0)]
    if short:
        ask = ", ".join(f"{k}={asked[k]:g}" for k in asked)
        got = ", ".join(f"{have.get(k, 0):g} {k.upper()}s" for k in asked)
        raise ConfigError(f"resources: each trial asks for {ask} but {where} has {got}; lower resources."
                          f"{short[0]} (--set resources.{short[0]}=...) or use a machine that has them")


def trials_at_once(cpus_per_trial: float, gpus_per_trial: float, have_cpus: float, have_gpus: float) -> int:
    """How many trials Ray runs side by side on this machine."""
    n = int(have_cpus // cpus_per_trial) if cpus_per_trial > 0 else 1
    if gpus_per_trial > 0:
        n = min(n, int(have_gpus // gpus_per_trial))
    return max(1, n)


def loader_need(trial, cpus: float) -> tuple[int, int] | None:
    """(loader workers, bytes of shared memory they may hold at once) of one trial, or None when its data is
    in memory. Upper bound: every worker prefetching uint8 images of its largest stream batch, plus an
    evaluation pass's (the training streams wait meanwhile, their prefetched batches held)."""
    from molere.registry import DATASETS
    cfg = trial.config
    ds = DATASETS.get(cfg.dataset.name)
    if not getattr(ds, "needs_root", False):
        return None
    size = int(cfg.dataset.options.get("image_size") or ds.Options().image_size)
    lo = Loading.for_run(cfg.train.num_workers, "cpu", cpus)
    batch = max(int(cfg.train.batch_size), int(cfg.method.hparams.get("meta_batch_size") or 0))
    per_item = 3 * size * size
    return lo.num_workers, lo.prefetch_factor * lo.num_workers * (batch + EVAL_BATCH) * per_item


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def _shm_free() -> int | None:
    try:
        st = os.statvfs(SHM)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def check_host(trials, cpus: float, gpus: float, have: dict[str, float]) -> str:
    """ConfigError when the loaders of the trials that run at once need more /dev/shm or memory than this
    machine has; returns a one-line summary of what was checked ('' when no trial uses loader workers)."""
    needs = [n for n in (loader_need(t, cpus) for t in trials) if n is not None]
    if not needs or os.environ.get("MOLERE_SKIP_HOST_CHECK"):
        return ""
    k = min(len(needs), trials_at_once(cpus, gpus, have.get("cpu", 1), have.get("gpu", 0)))
    workers, shm = (max(n[i] for n in needs) for i in range(2))
    need_shm, need_mem = k * shm, k * (workers * WORKER_MB * 2**20 + shm)
    free, avail = _shm_free(), _mem_available()
    gib = lambda b: f"{b / 2**30:.1f} GiB"   # noqa: E731
    what = f"{k} trial{'s' * (k > 1)} at once x {workers} loader workers"
    if free is not None and need_shm > free:
        raise ConfigError(f"resources: the data loaders of {what} need up to {gib(need_shm)} of shared memory "
                          f"and {SHM} has {gib(free)} free; give the container more (docker run "
                          f"--shm-size={math.ceil(need_shm / 2**30) + 1}g, Kubernetes: an emptyDir with medium: "
                          "Memory at /dev/shm) or lower train.num_workers / train.batch_size")
    if avail is not None and need_mem > avail:
        raise ConfigError(f"resources: the data loaders of {what} need about {gib(need_mem)} of memory "
                          f"({WORKER_MB} MB per worker plus their shared memory) and this machine has "
                          f"{gib(avail)} available; lower train.num_workers or run fewer trials at once "
                          "(raise resources.cpu)")
    return f"data loaders: {what}, up to {gib(need_shm)} of {SHM} and {gib(need_mem)} of memory: fits"
