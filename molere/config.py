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
    schedule: Literal["constant", "step", "cosine"] = "cosine"
    step_every: int = Field(30, gt=0, description="epochs between decays (step schedule)")
    step_gamma: float = Field(0.1, gt=0, le=1)
    grad_clip: float | None = Field(None, gt=0)
    eval_every: int = Field(1, gt=0, description="evaluate every N epochs (and always at the end)")
    num_workers: int = Field(0, ge=0)
    device: str = "cpu"

    @model_validator(mode="after")
    def _device_known(self):
        if not (self.device == "cpu" or self.device.startswith("cuda") or self.device == "auto"):
            raise ValueError("device must be 'cpu', 'cuda', 'cuda:N' or 'auto'")
        return self
