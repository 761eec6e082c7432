"""Name -> class registries (methods here; datasets and models in `benchmarks`) and plugin loading."""
from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Literal


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


LRW_PANEL = "LRW variants and MOLERE"
OTHER_PANEL = "Other baselines and same-split ERM controls"


@dataclass(frozen=True)
class MethodCard:
    """How the report shows a method and the role it plays there; a method class declares its own as
    `card = MethodCard(...)` (never inherited: an undeclared subclass gets the defaults)."""
    label: str = ""                 # short label of tables and legends; "" = the registered name
    name: str = ""                  # display name (long form); "" = the label
    color: str | None = None        # matplotlib colour; None = its controlled method's, else one from the name
    role: Literal["method", "reference", "control"] = "method"   # reference: what every gain is measured against
    control_of: str | None = None   # role "control": the registered method it is the same-split control of
    ordering: int | None = None     # position in the ordering check (claimed accuracy, low -> high)
    ordering_ties: bool = False     # ordering: may tie with the member before it ("≤" instead of "<")
    panel: str = OTHER_PANEL        # which panel of the gain figure shows it
    margin_bins: bool = False       # drawn in the binned margin-delta figure
    rank: int = 100                 # display order (ties by name)

    def __post_init__(self):
        if (self.role == "control") != (self.control_of is not None):
            raise ValueError("MethodCard: role='control' and control_of=<method name> go together")
        if self.role != "method" and self.ordering is not None:
            raise ValueError(f"MethodCard: a {self.role} cannot be a member of the ordering check")

    def resolved(self, registered_name: str) -> "MethodCard":
        label = self.label or registered_name
        return replace(self, label=label, name=self.name or label)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MethodCard":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class MethodRegistry(Registry):
    """Methods: a registered class's own `card` (or the default one) is resolved and checked, and so is the
    class itself (`check_class(name)`: every required hook there) before it is added."""

    def register(self, name: str) -> Callable[[Any], Any]:
        add = super().register(name)

        def decorate(cls: Any) -> Any:
            own = cls.__dict__.get("card")
            if own is not None and not isinstance(own, MethodCard):
                raise TypeError(f"method {name!r}: card must be a molere.registry.MethodCard")
            if hasattr(cls, "check_class"):
                cls.check_class(name)
            add(cls)
            cls.card = (own or MethodCard()).resolved(name)
            return cls
        return decorate

    def cards(self) -> dict[str, MethodCard]:
        return {n: self._entries[n].card for n in self.names()}

    def reference(self) -> str:
        """The registered name of the reference method (the one whose card has role 'reference')."""
        refs = [n for n, c in self.cards().items() if c.role == "reference"]
        if len(refs) != 1:
            raise UnknownNameError(f"exactly one method must have role 'reference' (got {refs or 'none'})")
        return refs[0]


METHODS = MethodRegistry("method")
register_method = METHODS.register


def load_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Import user modules so that their decorators register extra methods, datasets or models."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - a broken plugin (syntax error, raising, clashing) is bad input
            raise ImportError(f"plugin {mod!r} could not be imported: {type(exc).__name__}: {exc}") from exc
