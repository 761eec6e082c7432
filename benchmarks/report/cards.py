"""How the report shows each method: its card (label, name, colour, gain-figure panel, display rank, its place
in the paper's ordering claim) and its role (read from the method class, `molere.registry`).

The shipped methods' presentation is the one table `SHIPPED` below, by registered name. Any other method (a
plugin) gets the defaults (label = its name, a colour from the name, the other panel, rank 100, no ordering),
overridden by its class's optional `display = {...}` hints. The sweep records every trial's card in
plan.json, so a store renders as planned even without its plugins.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

LRW_PANEL = "LRW variants and MOLERE"
OTHER_PANEL = "Other baselines and same-split ERM controls"


@dataclass(frozen=True)
class MethodCard:
    """How the report shows a method and the role it plays there."""
    label: str = ""                 # short label of tables and legends; "" = the registered name
    name: str = ""                  # display name (long form); "" = the label
    color: str | None = None        # matplotlib colour; None = its controlled method's, else one from the name
    role: Literal["method", "reference", "control"] = "method"   # the class's (molere.registry)
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

    def resolved(self, registered_name: str) -> MethodCard:
        label = self.label or registered_name
        return replace(self, label=label, name=self.name or label)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MethodCard:
        """A card recorded in a plan.json (keys this version does not know are ignored)."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# the shipped methods' presentation, by registered name (role / control_of: the method class's)
SHIPPED: dict[str, dict[str, Any]] = {
    "erm": dict(label="ERM", name="Empirical risk minimisation", color="black", rank=0),
    "lrw": dict(label="LRW", name="Learned ReWeighting", color="#9467bd", panel=LRW_PANEL, rank=1),
    "lrw_easy": dict(label="LRW-Easy", color="#ff7f0e", ordering=0, panel=LRW_PANEL, margin_bins=True, rank=2),
    "lrw_random": dict(label="LRW-Random", color="#1f77b4", ordering=1, panel=LRW_PANEL, rank=3),
    "lrw_hard": dict(label="LRW-Hard", color="#2ca02c", ordering=2, panel=LRW_PANEL, margin_bins=True, rank=4),
    "molere": dict(label="MOLERE", name="Meta-learning on hard samples", color="#d62728", ordering=3,
                   ordering_ties=True, panel=LRW_PANEL, margin_bins=True, rank=5),
    "erm_train_val": dict(label="ERM (train+val)", name="ERM on train + validation pooled", rank=5),
    "erm_withheld_easy": dict(label="ERM, Easy withheld", rank=6),
    "erm_withheld_random": dict(label="ERM, Random withheld", rank=7),
    "erm_withheld_hard": dict(label="ERM, Hard withheld", rank=8),
    "mwn": dict(label="MWN", name="Meta-Weight-Net", color="#17becf", rank=9),
    "l2rw": dict(label="L2RW", name="Learning to Reweight Examples", color="#8c564b", rank=10),
    "fsr": dict(label="FSR", name="Fast Sample Re-weighting", color="#e377c2", rank=11),
    "mbr": dict(label="MBR", name="Margin-based reweighting (MAIL)", color="#bcbd22", rank=12),
    "rho_loss": dict(label="RHO-loss", name="Reducible hold-out loss selection", color="#aec7e8", rank=13),
    "gdw": dict(label="GDW", name="Generalized Data Weighting", color="#dbdb8d", rank=14),
    "bilaw": dict(label="BiLAW", name="Bilevel learned weights from multi-class margins", color="#c49c94", rank=15),
    "stablenet": dict(label="StableNet", name="StableNet (feature decorrelation)", color="#98df8a", rank=16),
    "maple": dict(label="MAPLE", name="Model-agnostic sample reweighting (MAPLE)", color="#ffbb78", rank=17),
    "jtt": dict(label="JTT", name="Just Train Twice", color="#7f7f7f", rank=18),
}
HINTS = {f.name for f in fields(MethodCard)} - {"role", "control_of"}   # what a class's `display` may set


def card_for(method: str, cls: type | None = None) -> MethodCard:
    """The card of `method`: its registered class `cls`'s role, this table's presentation and the class's
    `display` hints over the defaults; without a class, a plain method's (shipped presentation or defaults)."""
    hints = dict(getattr(cls, "display", None) or {})
    unknown = set(hints) - HINTS
    if unknown:
        raise ValueError(f"method {method!r}: display has unknown keys {sorted(unknown)}; known: {sorted(HINTS)}")
    role = dict(role=getattr(cls, "role", "method"), control_of=getattr(cls, "control_of", None))
    return MethodCard(**role, **{**SHIPPED.get(method, {}), **hints}).resolved(method)
