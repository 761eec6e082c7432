"""The stability matrix (docs/results/stability.md) from the result stores of sweeps/stability*.yaml.

    python -m benchmarks.report.stability results/stability results/stability_quickstart \
        --out docs/results/stability.md

A trial **falls apart** when it diverged (molere.guard) or ends below the midpoint between chance (the largest
share of one class among the test labels) and the test accuracy of its ERM partner (same dataset, regime,
seed and settings). One table per store (a setting): methods x dataset x regime, each cell the mean test
accuracy of the finished seeds and its gap to ERM, with every trial that fell apart, failed or is missing
counted in it. Falls measured and explained (known_falls.yaml) are marked "known" with their reason.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .methods import Methods
from .collect import collect

KNOWN_FALLS = Path(__file__).with_name("known_falls.yaml")


def known_reason(method: str, dataset: str, regime: str, path: Path | None = None) -> str | None:
    """Why trials of this cell fall apart, when that is measured and explained (known_falls.yaml); else None."""
    for entry in yaml.safe_load((path or KNOWN_FALLS).read_text()) or []:
        if entry["method"] == method and entry["regime"] == regime and entry["dataset"] in ("*", dataset):
            return " ".join(entry["why"].split())
    return None


def chance(sweep_dir: Path, trial_id: str) -> float:
    """Largest share of one class among a trial's test labels (NaN when its margins are absent)."""
    path = Path(sweep_dir) / "trials" / trial_id / "margins.npz"
    if not path.exists():
        return float("nan")
    with np.load(path) as z:
        labels = z["test_labels"] if "test_labels" in z.files else np.array([], dtype=int)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")


def judge(sweep_dir: str | Path) -> pd.DataFrame:
    """collect()'s frame plus per trial: chance, erm_acc, and `fell` = "diverged" | "collapsed" | ""."""
    return judged(sweep_dir)[0]


def judged(sweep_dir: str | Path) -> tuple[pd.DataFrame, Methods]:
    """judge()'s frame and the store's method cards."""
    sweep_dir = Path(sweep_dir)
    df, mc = collect(sweep_dir)
    if df.empty:
        return df, mc
    acc = df.set_index("trial_id")["test/acc"]
    df["erm_acc"] = df["erm_trial"].map(acc)
    df["chance"] = [chance(sweep_dir, t) if s == "done" else np.nan for t, s in zip(df["trial_id"], df["status"])]
    floor = df["chance"] + (df["erm_acc"] - df["chance"]) / 2
    collapsed = (df["status"] == "done") & (df["test/acc"] < floor)
    df["fell"] = np.where(df["status"] == "diverged", "diverged", np.where(collapsed, "collapsed", ""))
    return df, mc


def fallen(df: pd.DataFrame) -> pd.DataFrame:
    """The trials of a judged frame that fell apart."""
    return df[df["fell"] != ""] if len(df) else df


def _cell(sub: pd.DataFrame, mc: Methods) -> str:
    done = sub[sub["status"] == "done"]
    parts = []
    if len(done):
        text = f"{100 * done['test/acc'].mean():.1f}"
        gap = done["gain_over_erm_pts"].dropna()
        if len(gap) and not mc.is_reference(sub["method"].iloc[0]):
            text += f" ({gap.mean():+.1f})"
        parts.append(text)
    bad = {k: int(v) for k, v in sub["fell"].value_counts().items() if k}
    bad.update({s: int(n) for s, n in sub["status"].value_counts().items() if s in ("failed", "missing", "incomplete")})
    parts += [f"**{n} {k}**" for k, n in bad.items()]
    return f"{' '.join(parts)} [{len(done) - int((sub['fell'] == 'collapsed').sum())}/{len(sub)}]"


def table(df: pd.DataFrame, mc: Methods) -> str:
    """Markdown: one row per method (display order), one column per dataset x regime."""
    cols = list(dict.fromkeys(zip(df["dataset"], df["regime"])))
    head = ["method", *[f"{d} / {r}" for d, r in cols]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in sorted(df["method"].unique(), key=mc.rank):
        m = df[df["method"] == method]
        row = [mc.label(m["variant"].iloc[0])]
        for d, r in cols:
            sub = m[(m["dataset"] == d) & (m["regime"] == r)]
            row.append(_cell(sub, mc) if len(sub) else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def settings_line(sweep_dir: Path) -> str:
    plan = json.loads((sweep_dir / "plan.json").read_text())
    cfg = plan[0]["config"] if plan else {}
    train, model = cfg.get("train", {}), cfg.get("model", {})
    return (f"model {model.get('name')} {json.dumps(model.get('options') or {})}, {train.get('epochs')} epochs, "
            f"batch {train.get('batch_size')}, {train.get('optimizer')} lr {train.get('lr')}, "
            f"schedule {train.get('schedule')}")


def render(stores: list[Path]) -> tuple[str, int]:
    """The Markdown page and the number of trials that fell apart."""
    out, total_bad, total, not_run = [], 0, 0, 0
    for store in stores:
        df, mc = judged(store)
        bad = fallen(df)
        total_bad, total = total_bad + len(bad), total + len(df)
        not_run += int(df["status"].isin(["missing", "incomplete"]).sum())
        out += [f"## {store.name}", "", f"Settings: {settings_line(store)}; {len(df)} trials: "
                f"{int((df['status'] == 'done').sum())} done, {int((df['fell'] == 'diverged').sum())} diverged, "
                f"{int((df['fell'] == 'collapsed').sum())} collapsed, "
                f"{int(df['status'].isin(['failed', 'missing', 'incomplete']).sum())} failed or not run.", "",
                table(df, mc), ""]
        reasons: dict[str, str] = {}
        for _, r in bad.iterrows():
            why = r["failure"] if r["fell"] == "diverged" else \
                f"test acc {r['test/acc']:.3f}, its ERM {r['erm_acc']:.3f}, chance {r['chance']:.3f}"
            known = known_reason(r["method"], r["dataset"], r["regime"])
            if known:
                reasons.setdefault(f"{r['method']} / {r['dataset']} / {r['regime']}", known)
            out.append(f"- {r['dataset']}/{r['regime']}/{r['method']}/seed {r['seed']}: {r['fell']} ({why})"
                       + ("; known" if known else "; **not explained**"))
        out += [""] if len(bad) else []
        out += [f"- Known, {cell}: {why}" for cell, why in reasons.items()] + [""] * bool(reasons)
    head = ["# Stability matrix (generated)", "",
            "Each cell: mean test accuracy (%) of the finished seeds, its mean gap to ERM of the same seed in points, "
            "then **counts of trials that fell apart** (diverged: judged by the guard, docs/guard.md; collapsed: "
            "ended below the midpoint between chance and its ERM partner) or did not finish, and "
            "[trials that neither fell apart nor failed / planned]. Generated by "
            "`python -m benchmarks.report.stability " + " ".join(str(s) for s in stores) + "`.", "",
            f"**{total_bad} of {total} trials fell apart** ({sum('**not explained**' in line for line in out)} "
            "of them not explained)." + (
                f" {not_run} of the {total} planned trials have not run: this page covers part of the matrix."
                if not_run else ""), ""]
    return "\n".join(head + out), total_bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.report.stability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stores", nargs="+", type=Path, help="result stores of the stability sweeps (results/<name>)")
    p.add_argument("--out", type=Path, default=None, help="Markdown file (default: print)")
    a = p.parse_args(argv)
    for s in a.stores:
        if not (s / "plan.json").exists():
            print(f"benchmarks.report.stability: error: {s}: not a sweep directory (plan.json missing)")
            return 2
    text, bad = render(a.stores)
    if a.out is None:
        print(text)
    else:
        a.out.write_text(text + "\n")
        print(f"{a.out}: {bad} trials fell apart")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
