"""Name -> class registries (methods here; datasets and models in `benchmarks`) and plugin loading."""
from __future__ import annotations

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
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str, dict]]:
        """(name, first docstring line, default hyperparameters) for every entry."""
        rows = []
        for name in self.names():
            obj = self._entries[name]
            doc = (inspect.getdoc(obj) or "").strip().splitlines()
            hp = getattr(obj, "Hparams", None) or getattr(obj, "Options", None)
            defaults = hp().model_dump() if hp is not None else {}
            rows.append((name, doc[0] if doc else "", defaults))
        return rows


METHODS = Registry("method")
register_method = METHODS.register


def load_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Import user modules so that their decorators register extra methods, datasets or models."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - a broken plugin (syntax error, raising, clashing) is bad input
            raise ImportError(f"plugin {mod!r} could not be imported: {type(exc).__name__}: {exc}") from exc
