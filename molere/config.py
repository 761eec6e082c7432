"""Validated configuration: training settings shared by every method and the one-line error."""
from __future__ import annotations

import difflib
import json
import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """Bad input, reported as one line naming the field and what is allowed."""


class Strict(BaseModel):
    """Base for every config block: unknown keys and inf/nan are errors, values re-validated on assignment."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)
    # old field name -> new: the error for the old name names the new one; stored configs are `upgrade`d
    renamed: ClassVar[dict[str, str]] = {}
    # fields added after trials were stored: left out of a trial's id while at their default, so those ids hold
    added: ClassVar[tuple[str, ...]] = ()


def upgrade(model: type[BaseModel], data: dict) -> dict:
    """`data` (a config written before some of `model`'s fields were renamed) under the current names."""
    renamed = getattr(model, "renamed", {})
    return {renamed.get(k, k): v for k, v in data.items()}


def _cut(value, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _submodel(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        model = _submodel(model.model_fields[part].annotation)
    return model


def one_line(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """Condense a pydantic error into 'field: what is allowed (got ...)'; an unknown key gets the closest
    allowed name ("did you mean") and the list of allowed ones. The one error path of every entry point."""
    parts = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc) or "config"
        if err["type"] == "extra_forbidden":
            at = _model_at(model, loc[:-1]) or model
            if str(loc[-1]) in getattr(at, "renamed", {}):
                parts.append(f"{where}: renamed to {at.renamed[str(loc[-1])]!r}")
                continue
            allowed = list(at.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            parts.append(f"{where}: unknown field ({hint}allowed: {', '.join(allowed)})")
            continue
        got = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(got, dict) else f" (got {_cut(got)})"
        msg = "required field missing" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}{shown}")
    return "; ".join(parts)


def validate(model: type[BaseModel], data: dict | None, prefix: str = "") -> BaseModel:
    """Build `model` from `data` or raise ConfigError with a one-line message."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(one_line(exc, model, prefix)) from None


def _bounds(metadata) -> str:
    found = [f"{sym} {getattr(m, attr)}" for m in metadata
             for attr, sym in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")) if getattr(m, attr, None) is not None]
    return f" {', '.join(found)}" if found else ""


def _allowed(annotation, metadata=()) -> str:
    """'"a" | "b"', 'true | false', 'float > 0 (or null)', 'list of int > 0', ... for a type and constraints."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _allowed(args[0], (*args[1:], *metadata))
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if annotation is bool:
        return "true | false"
    if origin in (list, tuple, set):
        return f"list of {_allowed(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return " or ".join(_allowed(a, metadata) for a in rest) + " (or null)"
    if args:   # other unions
        return " or ".join(_allowed(a, metadata) for a in args)
    return getattr(annotation, "__name__", str(annotation)) + _bounds(metadata)


def describe_fields(model: type[BaseModel]) -> list[tuple[str, Any, str, str]]:
    """(name, default, allowed values, description) of every field of a config block."""
    rows = []
    for name, f in model.model_fields.items():
        default = f.default_factory() if f.default_factory is not None else f.default
        rows.append((name, default, _allowed(f.annotation, f.metadata), f.description or ""))
    return rows


class NoHparams(Strict):
    """A method without hyperparameters of its own."""


class GuardConfig(Strict):
    """When a trial counts as diverged (`molere.guard`; defaults and why: docs/guard.md)."""
    enabled: bool = Field(True, description="watch every epoch; false: a non-finite loss fails the trial as before")
    stop: bool = Field(True, description="stop the trial at the epoch it diverges (false: train on, still marked)")
    loss_ratio: float = Field(2.0, gt=1, description="diverged when the epoch's training loss exceeds this multiple "
                                                     "of the first epoch's")
    collapse_share: float = Field(0.9, gt=0, le=1, description="diverged when one class takes this share of the "
                              "guard examples' predictions while holding under half that share of their labels")
    chance_margin: float = Field(0.05, ge=0, lt=1, description="accuracy at chance: within this of the largest label "
                                                               "share of the guard examples")
    peak_margin: float = Field(0.25, gt=0, lt=1, description="...after an earlier epoch reached this far above chance")
    patience: int = Field(2, ge=1, description="consecutive epochs a criterion must hold (a non-finite loss: at once)")
    examples: int = Field(512, ge=0, description="training examples whose predictions are watched (0: loss only)")


class TrainConfig(Strict):
    """Optimisation settings of the classifier, shared by every method (and by its ERM reference)."""
    epochs: int = Field(30, gt=0)
    budget: Literal["steps", "epochs"] = Field(
        "steps", description="steps: every method takes the reference's classifier steps (an epoch = one pass of "
                             "ERM over the training split, whatever the method trains on); epochs: one pass over "
                             "the method's own training set per epoch (docs/model_selection.md)")
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
    eval_every: int | Literal["auto"] = Field(
        1, description="evaluate every N epochs (and always at the end); auto: as often as keeps the evaluation "
                       "passes within 5% of the training compute (molere.evaluation)")
    eval_selection: Literal["every", "last"] = Field(
        "every", description="evaluate the selection split at every evaluation (what report --select-epoch best "
                             "reads) or at the last epoch only (what the default model selection reads)")
    num_workers: int | None = Field(None, ge=0, description="DataLoader workers of file-backed sets; None = the "
                                    "trial's CPUs - 1 (molere.data.Loading)")
    device: str = "cpu"
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, bf16 autocast, or fp16 autocast with a gradient scaler (docs/perf.md)")
    tf32: bool = Field(True, description="TF32 float32 matmuls and convolutions on CUDA")
    channels_last: bool | None = Field(None, description="channels_last memory format for convolutional "
                                                         "models; None = on CUDA")
    guard: GuardConfig = Field(default_factory=GuardConfig, description="the divergence guard (molere.guard)")

    @model_validator(mode="after")
    def _warmup_needs_schedule(self):
        if any(isinstance(v, dict) for v in (self.warmup_epochs, self.schedule, self.epochs)):
            return self   # a search space (a sweep's train block): each draw is checked on its own
        if self.warmup_epochs > 0 and self.schedule != "warmup_cosine":
            raise ValueError("warmup_epochs needs schedule: warmup_cosine")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be below epochs ({self.epochs})")
        return self

    @field_validator("eval_every", mode="before")
    @classmethod
    def _eval_every(cls, v):
        if v == "auto" or isinstance(v, dict) or (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            return v   # (a dict: a search space of a sweep's train block, checked per draw)
        raise ValueError("a number of epochs > 0 or 'auto'")

    @model_validator(mode="after")
    def _device_known(self):
        if not (self.device == "cpu" or self.device.startswith("cuda") or self.device == "auto"):
            raise ValueError("device must be 'cpu', 'cuda', 'cuda:N' or 'auto'")
        return self
