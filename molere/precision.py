"""Numeric precision of training: autocast (bf16 / fp16), TF32 on CUDA, channels_last, and the contexts
the look-ahead uses to leave reduced precision where its maths needs more (docs/perf.md, "Precision").
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """The training forward's autocast context for `precision` ("fp32" = none)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype of the autocast active for `device_type`, or None when none is."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def full(t: torch.Tensor) -> torch.Tensor:
    """`t` in float32 when it is in a reduced floating dtype (bf16 / fp16); otherwise as it is."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def tf32_active() -> bool:
    """Whether CUDA float32 matmuls or convolutions may round to TF32."""
    return "tf32" in (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)


def reduced(device_type: str) -> bool:
    """Whether a forward on `device_type` here would run below IEEE float32 (autocast, or TF32 on CUDA)."""
    return autocast_dtype(device_type) is not None or (device_type == "cuda" and tf32_active())


def set_tf32(enabled: bool) -> None:
    """TF32 (10-bit mantissa) for CUDA float32 matmuls and convolutions, or IEEE float32."""
    mode = "tf32" if enabled else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode


@contextmanager
def ieee_fp32(device_type: str):
    """The block in IEEE float32: autocast off and, on CUDA, TF32 off (restored afterwards)."""
    saved = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    try:
        if device_type == "cuda":
            set_tf32(False)
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved


def no_autocast(device_type: str):
    """The block without autocast (float32 inputs give float32 maths; TF32 on CUDA stays as set)."""
    return torch.autocast(device_type, enabled=False)


def double_differentiable():
    """Attention by the math SDPA kernel: differentiable twice and in forward mode (fused kernels are not)."""
    return sdpa_kernel(SDPBackend.MATH)


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare(model: nn.Module, device: torch.device, precision: str, tf32: bool,
            channels_last: bool | None) -> nn.Module:
    """Set TF32 (CUDA), check bf16 support, and put a convolutional model in channels_last when asked
    (None: on CUDA). Returns the model."""
    if device.type == "cuda":
        set_tf32(tf32)
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            from .config import ConfigError
            raise ConfigError("train.precision: bf16 needs a GPU with bf16 support (Ampere or newer); "
                              "use fp16 or fp32")
    if channels_last is None:
        channels_last = device.type == "cuda"
    if channels_last and is_convolutional(model):
        model.to(memory_format=torch.channels_last)
    return model
