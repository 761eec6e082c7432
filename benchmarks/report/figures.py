"""Report figures (matplotlib, Agg): gains over ERM, paired margin deltas, binned deltas, training curves.

Each function writes PNGs under `folder` and returns [{"file", "title", "caption"}]; a figure whose data
is absent is skipped and a note says why (never an exception).
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from molere import margins as M  # noqa: E402

from benchmarks.trial.store import read_jsonl  # noqa: E402
from . import methods as MC  # noqa: E402
from .collect import METRIC_NAMES  # noqa: E402
from .methods import is_control, label  # noqa: E402

_PALETTE = plt.get_cmap("tab20").colors
plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "figure.dpi": 110})


def color(method: str):
    """The method card's colour; a control without one shares its method's; else one from the name."""
    c = MC.card(method)
    if c.color is None and c.control_of is not None:
        return color(c.control_of)
    return c.color if c.color is not None else _PALETTE[(zlib.crc32(method.encode()) % 10) * 2 + 1]


def slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(str(p) for p in parts))


def _save(fig, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / name, bbox_inches="tight")
    plt.close(fig)
    return name


def _grid(n: int, ncols: int, w: float = 4.2, h: float = 3.3):
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def gain_frame(cells: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Long form of gains over ERM for plotting: one row per (dataset x regime [x metric], variant)."""
    rows = []
    for _, r in cells[~cells["method"].map(MC.is_reference)].iterrows():
        for m in metrics:
            pre = "gain" if m == "test/acc" else f"gain[{m}]"
            if f"{pre} n" not in r or pd.isna(r[f"{pre} n"]):
                continue
            split, _, what = m.partition("/")
            what = METRIC_NAMES.get(what, what)
            group = f"{r['dataset']}\n{r['regime']}" + ("" if len(metrics) == 1 else f"\n{split}\n{what}")
            rows.append({"group": group, "variant": r["variant"], "method": r["method"],
                         "diverged": int(r.get("diverged", 0) or 0),
                         **{k: r[f"{pre} {k}"] for k in ("mean", "lo", "hi", "n")}})
    return pd.DataFrame(rows, columns=["group", "variant", "method", "mean", "lo", "hi", "n", "diverged"])


def gain_bars(gains: pd.DataFrame, folder: Path, name: str, title: str, notes: list) -> list[dict]:
    """Grouped bars of mean gain over ERM per group with 95% CI whiskers, one panel per card panel (e.g. LRW
    variants + MOLERE, then the rest), panels in the display order of their first method."""
    if gains.empty or gains["n"].fillna(0).sum() == 0:
        notes.append(f"{title}: no method with a finished ERM partner, figure skipped")
        return []
    groups = list(dict.fromkeys(gains["group"]))
    panel_of = gains["method"].map(lambda m: MC.card(m).panel)
    titles = sorted(set(panel_of), key=lambda t: min(MC.rank(m) for m in gains.loc[panel_of == t, "method"]))
    panels = [(t, gains[panel_of == t]) for t in titles]
    per_group = max(1.5, 0.3 * max(p["variant"].nunique() for _, p in panels))
    width_in = max(5.0, 1.0 + len(groups) * per_group)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width_in, 3.4 * len(panels)), squeeze=False)
    for ax, (ptitle, p) in zip(axes[:, 0], panels):
        variants = sorted(p["variant"].unique(), key=lambda v: MC.rank(p.loc[p["variant"] == v, "method"].iloc[0]))
        bw = 0.8 / len(variants)
        for j, v in enumerate(variants):
            xs, ys, lo, hi = [], [], [], []
            for g, group in enumerate(groups):
                r = p[(p["group"] == group) & (p["variant"] == v)]
                x = g - 0.4 + bw * (j + 0.5)
                if not r.empty and r["diverged"].iloc[0]:   # left out of the mean: said on the bar
                    ax.text(x, 0, f"{r['diverged'].iloc[0]} diverged", ha="center", va="top", fontsize=7,
                            rotation=90, color="red")
                if r.empty or not r["n"].iloc[0]:
                    if not r.empty:
                        ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="grey")
                    continue
                m, a, b = r[["mean", "lo", "hi"]].iloc[0]
                xs.append(x), ys.append(m)
                lo.append(m - a if np.isfinite(a) else 0), hi.append(b - m if np.isfinite(b) else 0)
            meth = p.loc[p["variant"] == v, "method"].iloc[0]
            ax.bar(xs, ys, bw, yerr=[lo, hi], capsize=3, color=color(meth), label=label(v), edgecolor="black",
                   linewidth=0.4, error_kw={"elinewidth": 1}, hatch="//" if is_control(meth) else None,
                   alpha=0.6 if is_control(meth) else 1.0)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel("Gain over ERM (accuracy points)")
        ax.set_title(ptitle)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return [{"file": _save(fig, folder, name), "title": title,
             "caption": "Gain over ERM of the same seed in accuracy points: mean over seeds with 95% t-interval "
                        "whiskers (no whisker: fewer than two paired seeds; n/a: no pair). 'k diverged' (red): "
                        "seeds whose trial diverged (molere.guard), left out of the bar."}]


def margin_histograms(deltas: dict, folder: Path, notes: list) -> list[dict]:
    """Per dataset x regime: histograms of paired test-margin deltas (method - ERM) with mean/median lines."""
    out = []
    for dataset, regime in dict.fromkeys((d, r) for d, r, _ in deltas):
        keys = sorted((k for k in deltas if k[:2] == (dataset, regime)), key=lambda k: MC.rank(k[2].split(" ")[0]))
        fig, axes = _grid(len(keys), 4, 3.6, 2.9)
        for ax, k in zip(axes, keys):
            d = deltas[k][1]
            counts, edges = M.histogram(d, bins=40)
            ax.bar(edges[:-1], counts / max(len(d), 1), np.diff(edges), align="edge",
                   color=color(k[2].split(" ")[0]), alpha=0.8)
            ax.axvline(d.mean(), color="black", linestyle="-", linewidth=1.2, label=f"mean {d.mean():+.3f}")
            ax.axvline(np.median(d), color="red", linestyle="--", linewidth=1.2, label=f"median {np.median(d):+.3f}")
            ax.set_title(f"{label(k[2])} − ERM", fontsize=10)
            ax.set_xlabel("Test margin delta (probability)")
            ax.set_ylabel("Fraction of test examples")
            ax.legend(fontsize=7, loc="upper center", framealpha=0.9)
        fig.suptitle(f"Paired test-margin deltas, {dataset} / {regime} (same examples, pooled over seeds)")
        fig.tight_layout()
        out.append({"file": _save(fig, folder, f"margin_deltas_{slug(dataset, regime)}.png"),
                    "title": f"Margin deltas: {dataset} / {regime}",
                    "caption": "Histogram (bin width 0.05) of per-example probabilistic margin of the method minus "
                               "that of ERM of the same seed, matched by example id; lines: mean and median."})
    if not deltas:
        notes.append("Margin figures skipped: no finished method with a finished ERM partner and saved test margins")
    return out


def margin_bins(bins: pd.DataFrame, folder: Path, notes: list) -> list[dict]:
    """Per dataset x regime: mean margin delta per ERM-margin bin with SEM bars, for the methods whose card asks
    for it (LRW-Easy/Hard, MOLERE)."""
    chosen = [m for m in MC.methods() if MC.card(m).margin_bins]
    b = bins[bins["method"].isin(chosen)]
    if b.empty:
        notes.append("Binned margin figure skipped: none of " + (", ".join(map(label, chosen)) or "the methods")
                     + " has paired test margins")
        return []
    groups = list(dict.fromkeys(zip(b["dataset"], b["regime"])))
    fig, axes = _grid(len(groups), 3, 4.6, 3.4)
    for ax, (dataset, regime) in zip(axes, groups):
        g = b[(b["dataset"] == dataset) & (b["regime"] == regime)]
        present = [m for m in chosen if m in set(g["method"])]
        for j, m in enumerate(present):
            s = g[g["method"] == m]
            x = s["center"].to_numpy() + (j - (len(present) - 1) / 2) * 0.03
            ax.errorbar(x, s["mean"], yerr=s["sem"].fillna(0), marker="o", ms=4, capsize=3, color=color(m),
                        label=label(m))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.linspace(-0.9, 0.9, 10), [f"{v:.1f}" for v in np.linspace(-0.9, 0.9, 10)], fontsize=8)
        ax.set_xlabel("ERM test margin (bin centre)")
        ax.set_ylabel("Mean margin delta vs ERM")
        ax.set_title(f"{dataset} / {regime}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        missing = [label(m) for m in chosen if m not in present]
        if missing:
            ax.text(0.99, 0.02, "no data: " + ", ".join(missing), transform=ax.transAxes, ha="right", fontsize=7,
                    color="grey")
    fig.suptitle("Margin delta by ERM margin (10 bins of width 0.2; error bars: SEM)")
    fig.tight_layout()
    return [{"file": _save(fig, folder, "margin_bins.png"), "title": "Margin delta by ERM-margin bin",
             "caption": "Test examples binned by the ERM model's margin; mean of (method − ERM) margin per bin, "
                        "pooled over seeds, with standard error of the mean. Empty bins are not drawn."}]


def training_curves(df: pd.DataFrame, sweep_dir: Path, folder: Path, notes: list) -> list[dict]:
    """Per dataset x regime: test accuracy per epoch for each method, mean ± std band over seeds."""
    curves: dict[tuple, list[pd.Series]] = {}
    diverged: dict[tuple, list[tuple[str, pd.Series]]] = {}
    for r in df[df["status"].isin(["done", "diverged"])].itertuples():
        rows = [x for x in read_jsonl(sweep_dir / "trials" / r.trial_id / "metrics.jsonl") if "test/acc" in x]
        if rows:
            s = pd.Series({int(x["epoch"]): 100 * float(x["test/acc"]) for x in rows})
            if r.status == "diverged":   # drawn on its own, never in a mean
                diverged.setdefault((r.dataset, r.regime), []).append((r.method, s))
                continue
            curves.setdefault((r.dataset, r.regime), {}).setdefault((r.method, r.variant), []).append(s)
    for key in diverged:
        curves.setdefault(key, {})
    if not curves:
        notes.append("Training curves skipped: no finished trial logged test accuracy per epoch")
        return []
    lengths = [len(x) for by in curves.values() for ss in by.values() for x in ss]
    if max(lengths + [len(s) for d in diverged.values() for _, s in d]) < 2:
        notes.append("Training curves skipped: test accuracy was evaluated at one epoch only (see train.eval_every)")
        return []
    fig, axes = _grid(len(curves), 3, 4.8, 3.6)
    for ax, ((dataset, regime), by_method) in zip(axes, curves.items()):
        for (method, variant), series in sorted(by_method.items(), key=lambda kv: MC.rank(kv[0][0])):
            table = pd.concat(series, axis=1).sort_index()
            mean, std = table.mean(axis=1), table.std(axis=1, ddof=1)
            ax.plot(mean.index, mean, color=color(method), linestyle="--" if is_control(method) else "-",
                    linewidth=1.4, marker="o" if len(mean) <= 12 else None, ms=3, label=label(variant))
            ax.fill_between(mean.index, mean - std.fillna(0), mean + std.fillna(0), color=color(method), alpha=0.12)
        for i, (method, s) in enumerate(diverged.get((dataset, regime), [])):
            ax.plot(s.index, s, color=color(method), linestyle=":", linewidth=1, marker="x", markevery=[len(s) - 1],
                    label="diverged (one seed each)" if i == 0 else None)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Test accuracy (%)")
        ax.set_title(f"{dataset} / {regime}")
        ax.grid(alpha=0.3)
    handles = {h.get_label(): h for ax in axes for h in ax.get_lines()}
    fig.suptitle("Test accuracy per epoch (mean over seeds; band: ± 1 std)")
    fig.tight_layout()
    fig.legend(list(handles.values()), list(handles.keys()), loc="center left", fontsize=8, frameon=False,
               bbox_to_anchor=(1.0, 0.5))
    return [{"file": _save(fig, folder, "training_curves.png"), "title": "Training curves",
             "caption": "Test accuracy after each evaluated epoch, mean over finished seeds with ± 1 std band; "
                        "seed counts are in the tables; dashed: same-split ERM controls; dotted, ending in x: a "
                        "diverged trial, one line per seed (not in any mean)."}]
