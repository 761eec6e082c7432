"""Read a sweep's result store (plan.json + trials/<id>/) into one long-form DataFrame, one row per planned trial.

Statuses: done, diverged (sealed, but judged diverged by molere.guard: never a result; `failure` says
where and why), failed (failed.json), incomplete (a run directory without `done`), missing (no run directory). Accuracies and official metrics stay fractions as stored (`test/acc`, `<split>/acc`,
`<split>/worst_group_acc`, `<split>/F1-macro_all`, `<split>/acc_wg`; METRIC_NAMES);
gains are in accuracy points (x100). A trial's ERM partner is the plan's `erm_trial_id`, or else the ERM
trial of the same dataset, regime, seed, model and training settings; a train-twice variant's control is
the `erm_withheld_*` trial of the same key (and the same δ when both record one).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from molere import margins as M

from molere.config import ConfigError

from benchmarks.sweep.stored import read_plan
from benchmarks.trial.config import MACHINE_FIELDS
from benchmarks.trial.store import RunDir
from .methods import Methods, meta_set

LABELS = ("dataset", "regime", "method", "seed", "hparams_id")
ACC_SPLITS_SKIP = ("train", "val", "selection")                     # not test accuracies
SELECTION_METRICS = ("selection/acc", "selection/acc_true")         # the model-selection split (report.selection)
MACHINE_TRAIN_FIELDS = tuple(path[1] for path in MACHINE_FIELDS if path[0] == "train")
# what each reported metric (after "<split>/") is called: accuracies, then a dataset's official metrics
# (WILDS' own evaluation: iWildCam's macro-F1, Waterbirds' worst-group accuracy)
METRIC_NAMES = {"acc": "acc", "worst_group_acc": "worst-group acc", "F1-macro_all": "macro-F1",
                "acc_wg": "WILDS worst-group acc"}


def load_plan(sweep_dir: Path) -> list[dict]:
    """plan.json, checked (a ConfigError names what is wrong with it)."""
    return read_plan(sweep_dir)


def is_acc_column(name: str) -> bool:
    split, _, what = name.partition("/")
    return what in METRIC_NAMES and split not in ACC_SPLITS_SKIP


def _key(plan_entry: dict) -> str:
    """Pairing key: dataset, regime, seed, model and training settings (machine fields dropped)."""
    lab, cfg = plan_entry["labels"], plan_entry.get("config") or {}
    train = _train(plan_entry)
    return json.dumps([lab["dataset"], lab["regime"], lab["seed"], cfg.get("model"), train], sort_keys=True)


def _train(plan_entry: dict) -> dict:
    train = (plan_entry.get("config") or {}).get("train") or {}
    return {k: v for k, v in train.items() if k not in MACHINE_TRAIN_FIELDS}


def _hparams(plan_entry: dict) -> dict:
    return ((plan_entry.get("config") or {}).get("method") or {}).get("hparams") or {}


def _read_trial(path: Path) -> dict:
    run = RunDir(path)
    row: dict = {"status": "missing" if not path.exists() else run.status}
    if row["status"] == "absent":
        row["status"] = "incomplete"
    if row["status"] == "incomplete" and run.problem():
        row["failure"] = f"not trusted: {run.problem()}"
    if row["status"] == "failed":
        try:
            row["failure"] = run.failure().get("error", "")
        except (OSError, ValueError) as exc:
            row["failure"] = f"unreadable failed.json ({exc})"
    if row["status"] == "diverged":
        try:
            res = run.result()
            row.update(failure=f"diverged at epoch {res.get('diverged_epoch')}: {res.get('diverged_reason')}",
                       diverged_epoch=res.get("diverged_epoch"))
        except (OSError, ValueError) as exc:
            row.update(status="incomplete", failure=f"unreadable result.json ({exc})")
    if row["status"] == "done":
        try:
            res = run.result()
            metrics = res.get("metrics", {})
            row.update({k: float(v) for k, v in metrics.items() if is_acc_column(k) and v is not None})
            row.update({k: float(metrics[k]) for k in SELECTION_METRICS if metrics.get(k) is not None})
            row["epochs"] = metrics.get("epoch")
            row["wall_time_s"] = res.get("wall_time_s")
        except (OSError, ValueError) as exc:
            row.update(status="incomplete", failure=f"unreadable result.json ({exc})")
    return row


def test_margins(sweep_dir: Path, trial_id: str, split: str = "test"):
    """(ids, margins) of one trial's split, or None (read once: every ERM run is paired many times)."""
    path = Path(sweep_dir) / "trials" / trial_id / "margins.npz"
    if not path.exists():
        return None
    return _load_margins(str(path), path.stat().st_mtime_ns, split)


@functools.lru_cache(maxsize=128)
def _load_margins(path: str, mtime_ns: int, split: str):
    with np.load(path) as z:
        if f"{split}_ids" not in z.files:
            return None
        return z[f"{split}_ids"], z[f"{split}_margins"]


def subset(plan: list[dict], only: dict[str, set[str]]) -> list[dict]:
    """The plan entries matching every filter ({"method": {"mwn"}, "seed": {"0"}, ...}); a method filter keeps
    the reference method (what gains are measured against). Unknown values raise ConfigError (one line)."""
    mc = Methods.from_plan(plan)
    for key, values in only.items():
        known = {str(e["labels"].get(key)) for e in plan}
        if values - known:
            raise ConfigError(f"--only {key}: {', '.join(sorted(values - known))} not in this store "
                             f"(it has {', '.join(sorted(known))})")
    keep = lambda e, k, v: str(e["labels"].get(k)) in v or (k == "method" and mc.is_reference(e["labels"]["method"]))
    return [e for e in plan if all(keep(e, k, v) for k, v in only.items())]


def collect(sweep_dir: str | Path, only: dict[str, set[str]] | None = None) -> tuple[pd.DataFrame, Methods]:
    """The long-form table: labels, hyperparameters, status, accuracies, gains and margin summaries (of the
    plan entries matching `only`, default all), and the cards of its methods (what the report passes on)."""
    sweep_dir = Path(sweep_dir)
    rows = []
    plan = load_plan(sweep_dir)
    plan = subset(plan, only) if only else plan
    mc = Methods.from_plan(plan)
    for i, entry in enumerate(plan):
        lab = entry["labels"]
        row = {"trial_id": entry["trial_id"], **{k: lab.get(k) for k in LABELS}, "plan_index": i,
               "hparams": json.dumps(_hparams(entry), sort_keys=True), "key": _key(entry), "failure": "",
               "planned_erm": entry.get("erm_trial_id"), "reference_only": bool(entry.get("reference_only")),
               "train": json.dumps(_train(entry), sort_keys=True)}
        row.update(_read_trial(sweep_dir / "trials" / entry["trial_id"]))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df, mc
    df["seed"] = df["seed"].astype(int)
    df["hparams_id"] = df["hparams_id"].fillna("").astype(str)
    if "test/acc" not in df:
        df["test/acc"] = np.nan
    df["variant"] = _variants(df)
    mc.declare({v: meta_set(json.loads(h)) for v, h in zip(df["variant"], df["hparams"])})
    _add_partners(df, mc)
    _add_gains(df)
    _add_margin_summaries(df, sweep_dir)
    return df, mc


def _variants(df: pd.DataFrame) -> list[str]:
    """Display name of a (method, hyperparameters) pair: the method, plus the hparams id when it has several in one
    dataset x regime (a dataset's own hyperparameters alone do not make draws)."""
    several = {m for m, g in df.groupby("method") if g.groupby(["dataset", "regime"])["hparams_id"].nunique().max() > 1}
    return [f"{m} [{h}]" if m in several else m for m, h in zip(df["method"], df["hparams_id"])]


def _add_partners(df: pd.DataFrame, mc: Methods) -> None:
    """Columns erm_trial / control_trial: the trial ids of each row's ERM partner and same-split control."""
    erm = {k: t for k, t, m in zip(df["key"], df["trial_id"], df["method"]) if mc.is_reference(m)}
    df["erm_trial"] = [None if mc.is_reference(m) else p if isinstance(p, str) and p else erm.get(k)
                       for k, m, p in zip(df["key"], df["method"], df["planned_erm"])]
    del df["planned_erm"]
    rows = list(zip(df["key"], df["method"], [json.loads(h).get("delta") for h in df["hparams"]], df["trial_id"]))
    controls = {}
    for key, method, delta, tid in rows:     # four columns, not itertuples over hundreds of metric columns
        controls.setdefault((key, method), []).append((delta, tid))
    picked = []
    for key, method, delta, _ in rows:
        cands = controls.get((key, mc.control_of(method)), [])
        same = [c for c in cands if (c[0] if c[0] is not None else delta) == delta] or cands
        picked.append(same[0][1] if same else None)
    df["control_trial"] = picked


def _add_gains(df: pd.DataFrame) -> None:
    acc = df.set_index("trial_id")["test/acc"] if "test/acc" in df else pd.Series(dtype=float)
    own = df["trial_id"].map(acc)
    df["gain_over_erm_pts"] = 100 * (own - df["erm_trial"].map(acc))
    df["minus_control_pts"] = 100 * (own - df["control_trial"].map(acc))


def _add_margin_summaries(df: pd.DataFrame, sweep_dir: Path) -> None:
    cols = {c: [] for c in ("margin_mean", "margin_median", "margin_frac_negative", "margin_delta_mean",
                            "margin_delta_median")}
    done = set(df.loc[df["status"] == "done", "trial_id"])
    for r in df.itertuples():
        got = test_margins(sweep_dir, r.trial_id) if r.trial_id in done else None
        s = M.summary(got[1]) if got is not None and len(got[1]) else {}
        ref = test_margins(sweep_dir, r.erm_trial) if got is not None and r.erm_trial in done else None
        d = M.paired_deltas(got[0], got[1], *ref)[1] if ref is not None else None
        cols["margin_mean"].append(s.get("mean", np.nan))
        cols["margin_median"].append(s.get("median", np.nan))
        cols["margin_frac_negative"].append(s.get("frac_negative", np.nan))
        cols["margin_delta_mean"].append(float(d.mean()) if d is not None else np.nan)
        cols["margin_delta_median"].append(float(np.median(d)) if d is not None else np.nan)
    for c, v in cols.items():
        df[c] = v


def acc_columns(df: pd.DataFrame) -> list[str]:
    """Accuracy columns present: test/acc first, then other test splits, then worst-group ones."""
    return order_metrics(c for c in df.columns if is_acc_column(c))


def order_metrics(names) -> list[str]:
    return sorted(names, key=lambda c: (c != "test/acc", c.endswith("worst_group_acc"), c))


def ood_datasets(df: pd.DataFrame) -> set[str]:
    """Datasets with accuracies beyond test/acc (extra OOD test splits or worst-group accuracy)."""
    extra = [c for c in acc_columns(df) if c != "test/acc"]
    return {d for d, g in df.groupby("dataset") if extra and g[extra].notna().any().any()}


CSV_COLUMNS = ("trial_id", *LABELS, "hparams", "status", "failure")


def trials_csv(df: pd.DataFrame) -> pd.DataFrame:
    """The stable machine-readable long form: one row per planned trial, in plan order."""
    rest = [c for c in df.columns if c not in CSV_COLUMNS and c not in ("key", "plan_index")]
    return df.sort_values("plan_index")[[*CSV_COLUMNS, *rest]]
