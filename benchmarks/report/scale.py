"""The scale a store ran at (training examples, model, epochs, seeds per dataset) beside the paper's setting."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from benchmarks.trial.store import RunDir
from .methods import Methods
from . import paper_numbers as P
from .collect import load_plan


STAND_IN = ("not a dataset of the paper (a stand-in: compare directions, not magnitudes); the paper's datasets "
            "have 3,334 (FGVC-Aircraft) to 1.28M (ImageNet-1K) training images, its networks are ResNet-50 / 152, "
            "WRN-28-10 and ViT-B/16, trained 100 epochs (S)")


def _model_text(model: dict) -> str:
    opts = dict(model.get("options") or {})
    name = model.get("name", "?")
    if name == "timm" and opts.get("arch"):
        name = f"timm {opts.pop('arch')}" + (" pretrained" if opts.pop("pretrained", False) else "")
    opts.pop("weights", None)
    return name + (f" {json.dumps(opts, separators=(',', ':'))}" if opts else "")


def _train_size(sweep_dir: Path, trials: pd.DataFrame, mc: Methods) -> int | None:
    """Training examples of the dataset's ERM trial (else any finished trial), from its result's class counts."""
    done = trials[trials["status"] == "done"]
    for tid in sorted(done["trial_id"], key=lambda t: not mc.is_reference(done.set_index("trial_id").at[t, "method"])):
        try:
            counts = RunDir(Path(sweep_dir) / "trials" / tid).result().get("info", {}).get("train_class_counts")
        except (OSError, ValueError):
            continue
        if counts:
            return int(sum(counts))
    return None


def store_scale(sel: pd.DataFrame, sweep_dir, mc: Methods) -> dict[str, dict]:
    """{dataset: {"train", "model", "epochs", "seeds"}} of the store's (selected) trials."""
    configs = {e["trial_id"]: e.get("config") or {} for e in load_plan(Path(sweep_dir))}
    out = {}
    for dataset, g in sel.groupby("dataset", sort=False):
        cfgs = [configs.get(t, {}) for t in g["trial_id"]]
        models = sorted({_model_text(c.get("model") or {}) for c in cfgs})
        epochs = sorted({str((c.get("train") or {}).get("epochs", "?")) for c in cfgs})
        out[dataset] = {"train": _train_size(sweep_dir, g, mc), "model": " / ".join(models),
                        "epochs": "/".join(epochs), "seeds": int(g["seed"].nunique())}
    return out


def ours_text(s: dict) -> str:
    train = f"{s['train']:,} training examples" if s.get("train") else "training size not recorded"
    return f"{train}, {s['model']}, {s['epochs']} epochs, {s['seeds']} seeds"


def scale_line(dataset: str, scale: dict[str, dict], metric: str = "test/acc") -> str:
    """'ours: 1,131 training examples, mlp ..., 20 epochs, 3 seeds; paper (CIFAR-100): ...' for one dataset."""
    ours = ours_text(scale[dataset]) if dataset in scale else "not run"
    rows = P.paper_rows_of(dataset, metric) or P.paper_rows_of(dataset)
    paper = "; ".join(f"{r}: {P.dataset_of(r)['setting']}" for r in rows) or STAND_IN
    return f"ours: {ours}. Paper: {paper}"
