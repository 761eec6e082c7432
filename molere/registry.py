"""The name -> class registries (METHODS, DATASETS, MODELS), their decorators and plugin loading."""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable


class UnknownNameError(KeyError):
    """A name that no registry entry answers to; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry:
    """Maps names to classes or factories, registered with a decorator.

    >>> METHODS = Registry("method")
    >>> @METHODS.register("erm")
    ... class ERM: ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorate(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered by "
                                 f"{self._entries[name].__module__}")
            self._entries[name] = obj
            obj.registered_name = name
            return obj
        return decorate

    def get(self, name: str) -> Any:
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}; {hint}known: {', '.join(self.names())}")
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str, dict]]:
        """(name, first docstring paragraph on one line, default hyperparameters) for every entry."""
        rows = []
        for name in self.names():
            obj = self._entries[name]
            doc = (inspect.getdoc(obj) or "").strip().split("\n\n")[0]
            hp = getattr(obj, "Hparams", None) or getattr(obj, "Options", None)
            defaults = hp().model_dump() if hp is not None else {}
            rows.append((name, " ".join(doc.split()), defaults))
        return rows


ROLES = ("method", "reference", "control")


def check_role(name: str, role: str, control_of: str | None) -> None:
    """A method's `role`: "method", "reference" (what every gain is measured against: exactly one, ERM) or
    "control" with `control_of` (the registered method it is the same-split control of)."""
    if role not in ROLES:
        raise ValueError(f"method {name!r}: role must be one of {', '.join(ROLES)} (got {role!r})")
    if (role == "control") != (control_of is not None):
        raise ValueError(f"method {name!r}: role='control' and control_of=<method name> go together")


class MethodRegistry(Registry):
    """Methods. A class declares its own `role` / `control_of` (never inherited: an undeclared subclass is a
    plain "method") and may declare `display = {...}`, hints for the report (label, name, color, ...); both
    are checked, and so is the class itself (`check_class(name)`: every required hook), before it is added."""

    def register(self, name: str) -> Callable[[Any], Any]:
        add = super().register(name)

        def decorate(cls: Any) -> Any:
            own = cls.__dict__
            role, control_of, display = own.get("role", "method"), own.get("control_of"), own.get("display", {})
            check_role(name, role, control_of)
            if not isinstance(display, dict):
                raise TypeError(f"method {name!r}: display must be a dict of report hints, e.g. {{'label': 'X'}}")
            if hasattr(cls, "check_class"):
                cls.check_class(name)
            add(cls)
            cls.role, cls.control_of, cls.display = role, control_of, dict(display)
            return cls
        return decorate

    def reference(self) -> str:
        """The registered name of the reference method (the one with role 'reference')."""
        refs = [n for n in self.names() if self._entries[n].role == "reference"]
        if len(refs) != 1:
            raise UnknownNameError(f"exactly one method must have role 'reference' (got {refs or 'none'})")
        return refs[0]

    def controls_of(self, method: str) -> list[str]:
        """The registered same-split controls of `method`, by name."""
        return [n for n in self.names() if self._entries[n].control_of == method]


METHODS = MethodRegistry("method")
DATASETS = Registry("dataset")
MODELS = Registry("model")
register_method = METHODS.register
register_dataset = DATASETS.register
register_model = MODELS.register


def load_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Import user modules so that their decorators register extra methods, datasets or models."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - a broken plugin (syntax error, raising, clashing) is bad input
            raise ImportError(f"plugin {mod!r} could not be imported: {type(exc).__name__}: {exc}") from exc
