"""Command-line values (`--hp`, `--train`, `--data-opt`, `--model-opt`, `--set`) parsed by the type of the
field they set: YAML first, unless the field rejects what YAML made of a scalar and takes its text.

`--hp meta_labels=true` sets the string "true" (the field allows "observed" | "true"), `--train lr=0.1`
the float 0.1, `--data-opt name=1e-3` keeps the text when the field is a string. A value the field takes
neither way is passed on as YAML read it, so the field's validator names the problem.
"""
from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from molere.config import ConfigError, TrainConfig

from benchmarks.sweep import safe_yaml
from benchmarks.sweep.safe_yaml import excerpt

UNKNOWN = object()   # no known field type: plain YAML


def _accepts(annotation, value) -> bool:
    try:
        TypeAdapter(annotation).validate_python(value)
        return True
    except (ValidationError, TypeError, ValueError):
        return False


def typed_value(text: str, annotation: Any = UNKNOWN) -> Any:
    """`text` read as YAML, or as the plain string when that is what the field (`annotation`) takes."""
    value = safe_yaml.loads(text)
    if annotation is UNKNOWN or isinstance(value, (str, dict, list)) or _accepts(annotation, value):
        return value
    return text if _accepts(annotation, text) else value


def submodel(annotation) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (`X`, `X | None`, `Annotated[X, ...]`), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = submodel(arg)
        if found is not None:
            return found
    return None


def field_type(model: type[BaseModel] | None, keys: list[str]) -> Any:
    """The annotation of the field at dotted `keys` inside `model` (nested blocks followed), or UNKNOWN."""
    for i, key in enumerate(keys):
        if model is None or key not in model.model_fields:
            return UNKNOWN
        annotation = model.model_fields[key].annotation
        if i == len(keys) - 1:
            return annotation
        model = submodel(annotation)
    return UNKNOWN


def pairs(items: list[str] | None, flag: str, model: type[BaseModel] | None) -> dict:
    """`key=value` items into a dict, each value typed by `model`'s field; dotted keys fill nested blocks."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag}: expected key=value (got {excerpt(item)!r})")
        key, text = item.split("=", 1)
        keys = key.split(".")
        if not all(keys):
            raise ConfigError(f"{flag}: bad key {excerpt(key, 40)!r}")
        try:
            value = typed_value(text, field_type(model, keys))
        except ConfigError as exc:
            raise ConfigError(f"{flag} {excerpt(key, 40)}: {exc}") from None
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{flag} {excerpt(key, 40)}: {k!r} is set to a value above; give it once")
        node[keys[-1]] = value
    return out


# ---- the types behind a sweep's free-form blocks ------------------------------------------------
def options_model(kind: str, name, plugins: list[str] = ()) -> type[BaseModel] | None:
    """The hyperparameter / options model of a registered method, dataset or model name (None if unknown)."""
    from benchmarks import catalog
    from benchmarks.models import parse_model_name
    try:
        catalog.load_plugins(list(plugins))
        if kind == "method":
            return catalog.METHODS.get(name).Hparams
        if kind == "dataset":
            return catalog.DATASETS.get(name).Options
        return catalog.MODELS.get(parse_model_name(name)[0]).Options
    except Exception:  # noqa: BLE001 - an unknown name is reported by the sweep's validation
        return None


def _named(entries, key: str) -> dict:
    """The list entry of a sweep's `datasets` at `key` (an index or a name), or {}."""
    if isinstance(entries, list):
        if key.lstrip("-").isdigit() and -len(entries) <= int(key) < len(entries):
            entry = entries[int(key)]
            return entry if isinstance(entry, dict) else {}
        return next((e for e in entries if isinstance(e, dict) and e.get("name") == key), {})
    return {}


def sweep_field_type(raw: dict, keys: list[str]) -> Any:
    """The annotation of the sweep field a `--set` path names (method hyperparameters, dataset and model
    options included), or UNKNOWN."""
    from benchmarks.sweep.schema import Sweep
    head, plugins = keys[0], raw.get("plugins") if isinstance(raw.get("plugins"), list) else []
    if head == "methods" and len(keys) >= 3:
        if keys[2] == "train":
            return field_type(TrainConfig, keys[3:])
        return field_type(options_model("method", keys[1], plugins), keys[2:])
    if head == "datasets" and len(keys) >= 3:
        entry = _named(raw.get("datasets"), keys[1])
        if keys[2] == "options":
            return field_type(options_model("dataset", entry.get("name", keys[1])), keys[3:])
        if keys[2] == "train":
            return field_type(TrainConfig, keys[3:])
        return field_type(submodel(Sweep.model_fields["datasets"].annotation), keys[2:])
    if head == "model" and len(keys) >= 3 and keys[1] == "options":
        model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
        return field_type(options_model("model", model.get("name", "mlp")), keys[2:])
    if head == "regimes" and len(keys) >= 3:
        from benchmarks.data.regimes import RegimeConfig
        return field_type(RegimeConfig, keys[2:])
    if head == "train":
        return field_type(TrainConfig, keys[1:])
    return field_type(Sweep, keys)
