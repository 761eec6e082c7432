"""The methods of the store being reported and their cards (label, colour, role, panel, order).

A card comes from plan.json (`method_card`, recorded when the sweep was planned), so a store renders
as planned even without its plugins; an older plan without cards falls back to the registry, and a
method known to neither gets the default card. `Methods.from_plan(plan)` builds them (`collect()` does, and
the report build passes the object to every table, figure and page); one object per report, nothing shared.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .cards import MethodCard, card_for


def _registered(method: str) -> MethodCard:
    from .. import catalog   # only for plans written before cards were recorded
    return card_for(method, catalog.METHODS.get(method) if method in catalog.METHODS else None)


@dataclass
class Methods:
    """The cards of one store's methods (the plan's and their controls), its methods and their meta sets."""
    planned: list[str] = field(default_factory=list)                 # the plan's methods
    cards: dict[str, MethodCard] = field(default_factory=dict)       # every method looked up
    protocols: dict[str, str] = field(default_factory=dict)          # variant -> the meta set it declares
    controls: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_plan(cls, plan: list[dict]) -> Methods:
        """The cards of the plan's methods (recorded, else registered, else default)."""
        self = cls(planned=list(dict.fromkeys(entry["labels"]["method"] for entry in plan)))
        for entry in plan:
            method, recorded = entry["labels"]["method"], entry.get("method_card")
            if recorded and method not in self.cards:
                self.cards[method] = MethodCard.from_dict(recorded).resolved(method)
        for method in self.planned:
            self.card(method)
        return self

    def card(self, method: str) -> MethodCard:
        if method not in self.cards:
            self.cards[method] = _registered(method)
        return self.cards[method]

    def methods(self) -> list[str]:
        """The methods of the plan, in display order."""
        return sorted(self.planned, key=self.rank)

    def rank(self, method: str) -> tuple:
        return self.card(method).rank, method

    def label(self, variant: str) -> str:
        """Short label of a variant ('method' or 'method [hparams id]'), with the meta set it declares
        ('L2RW (clean meta set, 10/class of train)')."""
        base, _, rest = variant.partition(" ")
        protocol = self.protocols.get(variant)
        return self.card(base).label + (f" {rest}" if rest else "") + (f" ({protocol})" if protocol else "")

    def declare(self, protocols: dict[str, str]) -> None:
        """The meta set of each variant of the store (collect() calls it)."""
        self.protocols.update({v: p for v, p in protocols.items() if p})

    def is_reference(self, method: str) -> bool:
        return self.card(method).role == "reference"

    def is_control(self, method: str) -> bool:
        return self.card(method).role == "control"

    def control_of(self, method: str) -> str | None:
        """The same-split control of `method`: the plan's (first in display order), else a registered one (not
        planned: the meta-effect table says so), else None."""
        if method not in self.controls:
            found = [m for m in self.methods() if self.card(m).control_of == method]
            if not found:
                from .. import catalog
                found = sorted(catalog.METHODS.controls_of(method), key=self.rank)
            self.controls[method] = found[0] if found else None
        return self.controls[method]

    def ordering_members(self) -> list[str]:
        """The plan's members of the ordering check, by claimed position (low -> high)."""
        members = (m for m in self.planned if self.card(m).ordering is not None)
        return sorted(members, key=lambda m: (self.card(m).ordering, m))

    def relation(self, method: str) -> str:
        """How an ordering member must compare with the member before it."""
        return "≤" if self.card(method).ordering_ties else "<"

    def ordering_claim(self, members: list[str] | None = None) -> str:
        """'LRW-Easy < LRW-Random < LRW-Hard ≤ MOLERE'."""
        members = self.ordering_members() if members is None else members
        return "".join((f" {self.relation(m)} " if i else "") + self.card(m).label for i, m in enumerate(members))


def meta_set(hparams: dict) -> str:
    """The meta / validation set a trial's hyperparameters declare ('' when they declare none): where it comes
    from (`meta_source`, a probe set of training examples) and whether its labels are the true ones."""
    if "meta_labels" not in hparams:
        return ""
    clean = hparams["meta_labels"] == "true"
    if "probe_per_class" in hparams:   # FSR: a probe set of training examples
        return f"{'true-label ' if clean else ''}probe set from train"
    source = hparams.get("meta_source")
    if source is None:   # the method's own validation set (LRW, MOLERE, train-twice): named only when an oracle
        return "true-label validation set" if clean else ""
    where = "val split" if source == "val" else f"{hparams.get('meta_per_class')}/class of train"
    return f"{'clean' if clean else 'observed-label'} meta set, {where}"
