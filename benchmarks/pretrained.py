"""Pretrained weights checked once in the driver, before any trial starts: a local file or a hub cache entry.

    check_pretrained(model_config, download=True) -> str   # what was verified; ConfigError (one line) if absent
"""
from __future__ import annotations

import os

from molere.config import ConfigError, validate

from benchmarks.trial.config import ModelConfig
from .models import HUB_PREFIXES, timm_model

HUB_FILES = ("model.safetensors", "pytorch_model.bin")
FIX = ("pre-download them on a machine with network (python -c \"import timm; timm.create_model('{arch}', "
       "pretrained=True)\") and copy the HF cache, or set model.options.weights to a local "
       ".safetensors/.pth/.bin file")


def timm_options(model: ModelConfig):
    """The validated timm options of `model`, or None when it is not a timm model."""
    name, opts = model.name, dict(model.options)
    if name.startswith("timm/"):
        name, opts["arch"] = "timm", opts.get("arch") or name[len("timm/"):]
    return validate(timm_model.Options, opts, prefix="model.options") if name == "timm" else None


def verify_file(path: str) -> None:
    """A readable weight file (a non-empty tensor mapping), or ConfigError naming it."""
    where = f"model.options.weights: {path}"
    if not os.path.isfile(path):
        raise ConfigError(f"{where} not found; give the path of a local .safetensors/.pth/.bin weight file "
                          f"(or drop weights to use the hub)")
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open
            with safe_open(path, "pt") as f:
                n = len(list(f.keys()))
        else:
            import torch
            try:
                state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            except RuntimeError:   # legacy (non-zip) format cannot be memory-mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
            n = len(state) if isinstance(state, dict) else 0
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise ConfigError(f"{where} is not a readable weight file ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if n == 0:
        raise ConfigError(f"{where} holds no tensors")


def hub_repo(arch: str):
    """(repo id, candidate file names) of the hub weights timm loads for `arch`, or None (URL or none)."""
    if arch.startswith(HUB_PREFIXES):
        return (arch.split(":", 1)[1], HUB_FILES) if not arch.startswith("local-dir:") else None
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(arch)
    if cfg is None or not cfg.hf_hub_id:
        return None
    repo, _, file = cfg.hf_hub_id.partition(":")
    return repo, ((file,) if file else (cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else HUB_FILES)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def check_pretrained(model: ModelConfig, download: bool = True, cache_dir: str | None = None) -> str:
    """Verify the pretrained weights a sweep's model needs; returns what was found ('' when none needed).

    Local file: it exists and reads as tensors. Hub: an entry in the HF cache, else (online, `download`)
    one download here in the driver; absent -> ConfigError with the fix."""
    opts = timm_options(model)
    if opts is None or not opts.pretrained:
        return ""
    if opts.weights is not None:
        verify_file(opts.weights)
        return f"local file {opts.weights}"
    if opts.arch.startswith("local-dir:"):
        path = opts.arch.split(":", 1)[1]
        if not os.path.isdir(path):
            raise ConfigError(f"model.options.arch: {path} not found (local-dir: needs a folder with config.json "
                              f"and weights)")
        return f"local folder {path}"
    found = hub_repo(opts.arch)
    if found is None:
        return "weights by URL (torch hub cache)"
    repo, files = found
    from huggingface_hub import try_to_load_from_cache
    for f in files:
        hit = try_to_load_from_cache(repo, f, cache_dir=cache_dir)
        if isinstance(hit, str) and os.path.isfile(hit):
            return f"HF cache {hit}"
    fix = FIX.format(arch=opts.arch)
    if not download or _offline():
        why = "the hub is offline" if _offline() else "not downloaded in a dry run"
        raise ConfigError(f"model.options.pretrained: weights of {opts.arch!r} ({repo}) are not in the HF cache "
                          f"and {why}; {fix}")
    from huggingface_hub import hf_hub_download
    for f in files:
        try:
            return f"downloaded {hf_hub_download(repo, f, cache_dir=cache_dir)}"
        except Exception as exc:  # noqa: BLE001 - the last failure is reported below
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    raise ConfigError(f"model.options.pretrained: weights of {opts.arch!r} ({repo}) could not be downloaded "
                      f"({error}); {fix}")
