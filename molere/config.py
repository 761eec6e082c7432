"""Validated configuration: training settings shared by every method and the one-line error."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """Bad input, reported as one line naming the field and what is allowed."""


class Strict(BaseModel):
    """Base for every config block: unknown keys and inf/nan are errors, values re-validated on assignment."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


def _cut(value, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(exc: ValidationError, prefix: str = "") -> str:
    """Condense a pydantic error into 'field: what is allowed (got ...)'."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix,) + tuple(err["loc"]) if p != "")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (typo?)"
        got = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {_cut(got)})"
        parts.append(f"{loc or 'config'}: {msg}{shown}")
    return "; ".join(parts)


def validate(model: type[BaseModel], data: dict | None, prefix: str = "") -> BaseModel:
    """Build `model` from `data` or raise ConfigError with a one-line message."""
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(one_line(exc, prefix)) from None


class NoHparams(Strict):
    """A method without hyperparameters of its own."""


class TrainConfig(Strict):
    """Optimisation settings of the classifier, shared by every method (and by its ERM reference)."""
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(64, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["constant", "step", "cosine", "warmup_cosine"] = Field(
        "cosine", description="cosine: per-epoch cosine; warmup_cosine: linear warmup then cosine, per step (timm)")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warmup length (warmup_cosine), may be fractional")
    warmup_lr: float = Field(1e-6, ge=0, description="learning rate at the start of the warmup (warmup_cosine)")
    min_lr: float = Field(0.0, ge=0, description="final learning rate of warmup_cosine")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the classifier's training loss")
    decay_norm_bias: bool = Field(True, description="false: no weight decay on norms, biases and embeddings "
                                                    "(timm's optimizer factory)")
    step_every: int = Field(30, gt=0, description="epochs between decays (step schedule)")
    step_gamma: float = Field(0.1, gt=0, le=1)
    grad_clip: float | None = Field(None, gt=0)
    eval_every: int = Field(1, gt=0, description="evaluate every N epochs (and always at the end)")
    num_workers: int | None = Field(None, ge=0, description="DataLoader workers of file-backed sets; None = the "
                                    "trial's CPUs - 1 (molere.data.Loading)")
    device: str = "cpu"
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, bf16 autocast, or fp16 autocast with a gradient scaler (docs/perf.md)")
    tf32: bool = Field(True, description="TF32 float32 matmuls and convolutions on CUDA")
    channels_last: bool | None = Field(None, description="channels_last memory format for convolutional "
                                                         "models; None = on CUDA")

    @model_validator(mode="after")
    def _warmup_needs_schedule(self):
        if self.warmup_epochs > 0 and self.schedule != "warmup_cosine":
            raise ValueError("warmup_epochs needs schedule: warmup_cosine")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be below epochs ({self.epochs})")
        return self

    @model_validator(mode="after")
    def _device_known(self):
        if not (self.device == "cpu" or self.device.startswith("cuda") or self.device == "auto"):
            raise ValueError("device must be 'cpu', 'cuda', 'cuda:N' or 'auto'")
        return self
