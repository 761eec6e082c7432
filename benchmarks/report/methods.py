"""The methods of the store being reported and their cards (label, colour, role, panel, order).

A card comes from plan.json (`method_card`, recorded when the sweep was planned), so a store renders
as planned even without its plugins; an older plan without cards falls back to the registry, and a
method known to neither gets the default card. `use(plan)` is called by `collect()`.
"""
from __future__ import annotations

from molere.registry import MethodCard

_cards: dict[str, MethodCard] = {}          # every method looked up (the plan's and their controls)
_planned: list[str] = []                     # the plan's methods
_controls: dict[str, str | None] = {}
_protocols: dict[str, str] = {}              # variant -> the meta set it declares ("clean meta set, ...")


def use(plan: list[dict]) -> None:
    """Take the cards of the plan's methods (recorded, else registered, else default)."""
    _cards.clear()
    _controls.clear()
    _protocols.clear()
    _planned[:] = list(dict.fromkeys(entry["labels"]["method"] for entry in plan))
    for entry in plan:
        method, recorded = entry["labels"]["method"], entry.get("method_card")
        if recorded and method not in _cards:
            _cards[method] = MethodCard.from_dict(recorded).resolved(method)
    for method in _planned:
        card(method)


def _registered(method: str) -> MethodCard:
    from .. import catalog   # only for plans written before cards were recorded
    return catalog.METHODS.get(method).card if method in catalog.METHODS else MethodCard().resolved(method)


def card(method: str) -> MethodCard:
    if method not in _cards:
        _cards[method] = _registered(method)
    return _cards[method]


def methods() -> list[str]:
    """The methods of the plan, in display order."""
    return sorted(_planned, key=rank)


def rank(method: str) -> tuple:
    return card(method).rank, method


def label(variant: str) -> str:
    """Short label of a variant ('method' or 'method [hparams id]'), with the meta set it declares
    ('L2RW (clean meta set, 10/class of train)')."""
    base, _, rest = variant.partition(" ")
    protocol = _protocols.get(variant)
    return card(base).label + (f" {rest}" if rest else "") + (f" ({protocol})" if protocol else "")


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


def declare(protocols: dict[str, str]) -> None:
    """The meta set of each variant of the store (collect() calls it)."""
    _protocols.update({v: p for v, p in protocols.items() if p})


def is_reference(method: str) -> bool:
    return card(method).role == "reference"


def is_control(method: str) -> bool:
    return card(method).role == "control"


def control_of(method: str) -> str | None:
    """The same-split control of `method`: the plan's (first in display order), else a registered one (not
    planned: the meta-effect table says so), else None."""
    if method not in _controls:
        found = [m for m in methods() if card(m).control_of == method]
        if not found:
            from .. import catalog
            found = [m for m, c in sorted(catalog.METHODS.cards().items(), key=lambda mc: (mc[1].rank, mc[0]))
                     if c.control_of == method]
        _controls[method] = found[0] if found else None
    return _controls[method]


def ordering_members() -> list[str]:
    """The plan's members of the ordering check, by claimed position (low -> high)."""
    return sorted((m for m in _planned if card(m).ordering is not None), key=lambda m: (card(m).ordering, m))


def relation(method: str) -> str:
    """How an ordering member must compare with the member before it."""
    return "≤" if card(method).ordering_ties else "<"


def ordering_claim(members: list[str] | None = None) -> str:
    """'LRW-Easy < LRW-Random < LRW-Hard ≤ MOLERE'."""
    members = ordering_members() if members is None else members
    return "".join((f" {relation(m)} " if i else "") + card(m).label for i, m in enumerate(members))
