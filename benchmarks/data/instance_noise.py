"""Instance-dependent label noise from the image content (Xia et al., NeurIPS 2020, "Part-dependent label noise").

Example i flips with probability q_i ~ N(rate, 0.1²) truncated to [0, 1]; a flipped label goes to class
k ≠ y_i with probability softmax_k(f_i · W[y_i]), W[c] (D x C) a seeded standard-normal matrix, the true
class excluded. f_i is the example's content: its flattened input (evaluation transforms), average-pooled
to at most 32x32 and, above `FEATURES` values, multiplied by a fixed Gaussian projection scaled to keep
norms (Johnson-Lindenstrauss; for Gaussian W the generator depends on f only through its geometry). q_i's
quantile comes from a hash of the content and the trial seed, so the same image at two ids (two
positions) gets the same flip distribution; only the coin flips are per example.

File-backed sets are read in one streamed pass; the content hashes and features of a (source, positions)
pair are cached on disk (`cache_dir()`), so the trials of a sweep read the images once.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from molere.data import ExampleSet, Loading

INSTANCE_STD = 0.1     # std of the per-example flip rate around `rate` (Xia et al. 2020)
FEATURES = 512         # content features above this many values are projected to this many
POOL_SIDE = 32         # images are average-pooled to at most this side first
CACHE_VERSION = 1
_PROJECTION_SEED = 20201206   # fixed: the projection is part of the noise model, not of a trial


def cache_dir() -> Path:
    """Where content features of file-backed sets are cached ($MOLERE_BENCH_CACHE, else ~/.cache/molere-bench)."""
    return Path(os.environ.get("MOLERE_BENCH_CACHE") or Path.home() / ".cache" / "molere-bench") / "instance_noise"


def content_features(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit content hashes, float32 features (B, <= FEATURES)) of a batch of inputs."""
    x = x.detach().float().cpu().contiguous()
    hashes = np.array([int.from_bytes(hashlib.blake2b(row.numpy().tobytes(), digest_size=8).digest(), "little")
                       for row in x], dtype=np.uint64)
    if x.ndim == 4 and max(x.shape[-2:]) > POOL_SIDE:
        x = F.adaptive_avg_pool2d(x, (min(POOL_SIDE, x.shape[-2]), min(POOL_SIDE, x.shape[-1])))
    flat = x.reshape(len(x), -1)
    if flat.shape[1] > FEATURES:
        g = torch.Generator().manual_seed(_PROJECTION_SEED + flat.shape[1])
        proj = torch.randn(flat.shape[1], FEATURES, generator=g) / FEATURES ** 0.5
        flat = flat @ proj
    return hashes, flat.numpy().astype(np.float16).astype(np.float32)   # float16: what the cache holds


def _source_identity(source) -> str | None:
    """A cheap fingerprint of a known image source (files: paths, sizes, times; arrays: their bytes)."""
    if hasattr(source, "paths"):
        h = hashlib.sha256()
        for p in source.paths:
            st = os.stat(p)
            h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    if isinstance(getattr(source, "images", None), np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(source.images).data).hexdigest()
    return None


def _cache_file(examples: ExampleSet) -> Path | None:
    src = examples.eval_source or examples.source
    ident = _source_identity(src)
    if ident is None:
        return None
    key = json.dumps([CACHE_VERSION, type(src).__name__, ident, repr(getattr(src, "transform", None)),
                      hashlib.sha256(np.asarray(examples.positions, dtype=np.int64).tobytes()).hexdigest(),
                      FEATURES, POOL_SIDE])
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"


def _stream(examples: ExampleSet) -> tuple[np.ndarray, np.ndarray]:
    parts = [content_features(b.x) for b in examples.batches(256, train=False, loading=Loading.for_run(None))]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def content(examples: ExampleSet) -> tuple[np.ndarray, np.ndarray]:
    """Content hashes and features of every example, in order (one streamed, cached pass when file-backed)."""
    if examples.in_memory:
        parts = [content_features(examples.x[s:s + 4096]) for s in range(0, len(examples), 4096)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    path = _cache_file(examples)
    if path is not None and path.exists():
        with np.load(path) as z:
            return z["hashes"], z["features"].astype(np.float32)
    hashes, feats = _stream(examples)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, hashes=hashes, features=feats.astype(np.float16))
        os.replace(tmp, path)
    return hashes, feats


def _uniform(hashes: np.ndarray, seed: int) -> np.ndarray:
    """A uniform in (0, 1) per (content, trial seed): splitmix64 of the hash offset by the seed."""
    with np.errstate(over="ignore"):
        z = hashes.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53


def _class_probs(feats: np.ndarray, c: int, C: int, seed: int) -> np.ndarray:
    """softmax(f · W[c]) over the classes k ≠ c for the examples of true class c."""
    w = np.random.default_rng([seed, 3, 7, c]).standard_normal((feats.shape[1], C)).astype(np.float32)
    logits = (feats @ w).astype(np.float64)
    logits[:, c] = -np.inf
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def _flip_rates(hashes: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """q_i ~ N(rate, 0.1²) truncated to [0, 1], its quantile given by the content hash and the trial seed."""
    from scipy.stats import truncnorm
    a, b = (0 - rate) / INSTANCE_STD, (1 - rate) / INSTANCE_STD
    return truncnorm.ppf(_uniform(hashes, seed), a, b, loc=rate, scale=INSTANCE_STD)


def flip_distribution(examples: ExampleSet, rate: float, C: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(q: each example's flip probability, P: its (n, C) target distribution if flipped), from its content."""
    hashes, feats = content(examples)
    y = examples.labels.numpy()
    q = _flip_rates(hashes, rate, seed)
    probs = np.zeros((len(y), C))
    for c in np.unique(y):
        probs[y == c] = _class_probs(feats[y == c], int(c), C, seed)
    return q, probs


def flip_instance(examples: ExampleSet, rate: float, C: int, seed: int, rng: np.random.Generator) -> np.ndarray:
    """Noisy observed labels of `examples`: flip with q_i to a target drawn from P_i (class by class, so that
    no n x C array is held for large sets)."""
    hashes, feats = content(examples)
    y = examples.labels.numpy().copy()
    q = _flip_rates(hashes, rate, seed)
    v, coin = rng.random(len(y)), rng.random(len(y))
    target = y.copy()
    for c in np.unique(y):
        pos = np.flatnonzero(y == c)
        cum = _class_probs(feats[pos], int(c), C, seed).cumsum(1)
        t = (cum < v[pos, None]).sum(1).clip(max=C - 1)
        target[pos] = np.where(t == c, (c + 1) % C, t)   # only reachable through rounding at the edge
    return np.where(coin < q, target, y)
