"""Same-data references in the plan: every method that learns from the validation split gets an ERM that
saw the same examples, `erm_train_val` (ERM on train + val pooled), planned beside ERM.

A method learns from val when it pools val into training (`trains_on_val`: train-twice variants, their
controls, MOLERE) or meta-learns on it (`uses_meta_set` with `meta_source: val`: LRW, MWN, L2RW); a class may
say otherwise with a `learns_from_val(hparams) -> bool` classmethod. Which reference a comparison finally
uses follows the realised counts (benchmarks.report.like_for_like); why: docs/model_selection.md.
"""
from __future__ import annotations

from benchmarks import catalog
from benchmarks.trial.config import MethodConfig, TrialConfig

POOLED_REFERENCE = "erm_train_val"   # ERM on train + val: the reference of the methods that learn from val


def learns_from_val(method: str, hparams: dict) -> bool:
    """Whether `method` with `hparams` learns from the dataset's validation split (module docstring)."""
    if method == POOLED_REFERENCE or method not in catalog.METHODS:
        return False
    cls = catalog.METHODS.get(method)
    if hasattr(cls, "learns_from_val"):
        return bool(cls.learns_from_val(hparams))
    if getattr(cls, "trains_on_val", False):
        return True
    return bool(getattr(cls, "uses_meta_set", False)) and hparams.get("meta_source", "val") == "val"


def pooled_reference_config(cfg: TrialConfig) -> TrialConfig:
    """The `erm_train_val` trial of the same (dataset, regime, model, seed, training settings)."""
    return cfg.model_copy(update={"method": MethodConfig(name=POOLED_REFERENCE, hparams={})})
