"""The realised data of a plan (`--dry-run`): train / val / selection / test sizes per dataset x regime.

Each (dataset, regime) is loaded once for the first planned seed (the long tail's sizes do not depend on
the seed; its draw of examples does); data that is not reachable is named instead.
"""
from __future__ import annotations

from benchmarks.data.datasets.common import DataMissingError
from benchmarks.data.load import load_task
from molere.config import ConfigError


def size_lines(trials) -> list[str]:
    """One line per planned (dataset, regime): what ERM trains on, the val split the meta methods learn from,
    the pool train + val the train-twice methods and MOLERE split, the selection split and the test set."""
    out, done = [], set()
    for t in trials:
        key = (t.labels["dataset"], t.labels["regime"])
        if key in done:
            continue
        done.add(key)
        cfg = t.config
        try:
            task = load_task(cfg.dataset, cfg.regime, cfg.seed)
        except (DataMissingError, ConfigError, OSError) as exc:
            out.append(f"sizes ({key[0]}, {key[1]}): not known ({type(exc).__name__}: {str(exc).splitlines()[0]})")
            continue
        z = task.info["sizes"]
        extra = "".join(f", {k[5:]} {v}" for k, v in z.items() if k.startswith("test:"))
        out.append(f"sizes ({key[0]}, {key[1]}, seed {cfg.seed}): train {z['train']} (ERM; "
                   f"{-(-z['train'] // cfg.train.batch_size)} steps/epoch), val {z['val']} ({task.info['val_split']}), "
                   f"train + val {z['train'] + z['val']} (pooled by train-twice, MOLERE, erm_train_val), selection "
                   f"{z['selection']}, test {z['test']}{extra}")
    return out
