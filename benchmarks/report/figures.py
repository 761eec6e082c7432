"""Report figures (matplotlib, Agg): gains over ERM, training curves (small multiples), paired margin deltas,
binned deltas. Every interval drawn is a 95% t-interval over seeds (or pooled examples).

Each function writes PNGs under `folder` and returns [{"file", "title", "caption"}]; a figure whose data
is absent is skipped and a note says why (never an exception).
"""
from __future__ import annotations

import re
import textwrap
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
from .methods import Methods  # noqa: E402
from .collect import METRIC_NAMES  # noqa: E402

_PALETTE = plt.get_cmap("tab20").colors
plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "figure.dpi": 110})


def color(method: str, mc: Methods):
    """The method card's colour; a control without one shares its method's; else one from the name."""
    c = mc.card(method)
    if c.color is None and c.control_of is not None:
        return color(c.control_of, mc)
    return c.color if c.color is not None else _PALETTE[(zlib.crc32(method.encode()) % 10) * 2 + 1]


def slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(str(p) for p in parts))


def _save(fig, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / name, bbox_inches="tight")
    plt.close(fig)
    return name


def _grid(n: int, ncols: int, w: float = 4.2, h: float = 3.3, share: bool = False):
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False, sharex=share, sharey=share)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def gain_frame(cells: pd.DataFrame, metrics: list[str], mc: Methods) -> pd.DataFrame:
    """Long form of gains over ERM for plotting: one row per (dataset x regime [x metric], variant)."""
    rows = []
    for _, r in cells[~cells["method"].map(mc.is_reference)].iterrows():
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


def gain_bars(gains: pd.DataFrame, folder: Path, name: str, title: str, notes: list, mc: Methods) -> list[dict]:
    """Grouped bars of mean gain over ERM per group with 95% CI whiskers, one panel per card panel (e.g. LRW
    variants + MOLERE, then the rest), panels in the display order of their first method."""
    if gains.empty or gains["n"].fillna(0).sum() == 0:
        notes.append(f"{title}: no method with a finished ERM partner, figure skipped")
        return []
    groups = list(dict.fromkeys(gains["group"]))
    panel_of = gains["method"].map(lambda m: mc.card(m).panel)
    titles = sorted(set(panel_of), key=lambda t: min(mc.rank(m) for m in gains.loc[panel_of == t, "method"]))
    panels = [(t, gains[panel_of == t]) for t in titles]
    per_group = max(1.5, 0.3 * max(p["variant"].nunique() for _, p in panels))
    width_in = max(5.0, 1.0 + len(groups) * per_group)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width_in, 3.4 * len(panels)), squeeze=False)
    for ax, (ptitle, p) in zip(axes[:, 0], panels):
        variants = sorted(p["variant"].unique(), key=lambda v: mc.rank(p.loc[p["variant"] == v, "method"].iloc[0]))
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
            ax.bar(xs, ys, bw, yerr=[lo, hi], capsize=3, color=color(meth, mc), label=mc.label(v), edgecolor="black",
                   linewidth=0.4, error_kw={"elinewidth": 1}, hatch="//" if mc.is_control(meth) else None,
                   alpha=0.6 if mc.is_control(meth) else 1.0)
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


def margin_histograms(deltas: dict, folder: Path, notes: list, mc: Methods) -> list[dict]:
    """Per dataset x regime: histograms of paired test-margin deltas (method - ERM), one panel per method on
    shared axes; the mean and median are lines (legend outside the panels) with their values in the titles."""
    out = []
    for dataset, regime in dict.fromkeys((d, r) for d, r, _ in deltas):
        keys = sorted((k for k in deltas if k[:2] == (dataset, regime)), key=lambda k: mc.rank(k[2].split(" ")[0]))
        fig, axes = _grid(len(keys), 4, 3.2, 2.5, share=True)
        for ax, k in zip(axes, keys):
            d = deltas[k][1]
            counts, edges = M.histogram(d, bins=40)
            ax.stairs(counts / max(len(d), 1), edges, fill=True, color=color(k[2].split(" ")[0], mc), alpha=0.8)
            ax.axvline(d.mean(), color="black", linestyle="-", linewidth=1.2, label="mean")
            ax.axvline(np.median(d), color="red", linestyle="--", linewidth=1.2, label="median")
            ax.set_title(f"{textwrap.fill(mc.label(k[2]) + ' − ERM', 34)}\nmean {d.mean():+.3f}, median "
                         f"{np.median(d):+.3f}", fontsize=9)
            ax.grid(alpha=0.3)
        _outer_labels(axes, "Test margin delta (probability)", "Fraction of test examples")
        handles = axes[0].get_lines()[:2]
        fig.legend(handles, [h.get_label() for h in handles], loc="upper left", bbox_to_anchor=(1.0, 0.95),
                   frameon=False)
        fig.suptitle(f"Paired test-margin deltas, {dataset} / {regime} (same examples, pooled over seeds)")
        _fixed_margins(fig, top_in=1.1, bottom_in=0.55, wspace=0.12, hspace=0.75)
        out.append({"file": _save(fig, folder, f"margin_deltas_{slug(dataset, regime)}.png"),
                    "title": f"Margin deltas: {dataset} / {regime}",
                    "caption": "Histogram (bin width 0.05) of per-example probabilistic margin of the method minus "
                               "that of ERM of the same seed, matched by example id; shared axes."})
    if not deltas:
        notes.append("Margin figures skipped: no finished method with a finished ERM partner and saved test margins")
    return out


def _fixed_margins(fig, top_in: float, bottom_in: float, wspace: float = 0.3, hspace: float = 0.25) -> None:
    """Panel spacing in inches instead of `tight_layout` (which draws every panel once more: seconds for a
    grid of small multiples); labels outside the panels are kept by the `bbox_inches="tight"` save."""
    h = fig.get_figheight()
    fig.subplots_adjust(left=0.08, right=0.98, top=1 - top_in / h, bottom=bottom_in / h, wspace=wspace, hspace=hspace)


def _outer_labels(axes, xlabel: str, ylabel: str) -> None:
    """Axis labels on the outer panels of a shared grid only."""
    for ax in axes:
        ss = ax.get_subplotspec()
        if ss.is_last_row() or ax is axes[-1]:
            ax.set_xlabel(xlabel)
        if ss.is_first_col():
            ax.set_ylabel(ylabel)


def ci_half(sem, count):
    """Half-width of the 95% t-interval from a standard error and its count (NaN below 2)."""
    from scipy import stats as sps
    count = np.asarray(count, dtype=float)
    t = np.where(count >= 2, sps.t.ppf(0.975, np.maximum(count - 1, 1)), np.nan)
    return np.asarray(sem, dtype=float) * t


def margin_bins(bins: pd.DataFrame, folder: Path, notes: list, mc: Methods) -> list[dict]:
    """Per dataset x regime: mean margin delta per ERM-margin bin with 95% CIs, for the methods whose card asks
    for it (LRW-Easy/Hard, MOLERE); shared axes, one legend outside the panels."""
    chosen = [m for m in mc.methods() if mc.card(m).margin_bins]
    b = bins[bins["method"].isin(chosen)]
    if b.empty:
        notes.append("Binned margin figure skipped: none of " + (", ".join(map(mc.label, chosen)) or "the methods")
                     + " has paired test margins")
        return []
    groups = list(dict.fromkeys(zip(b["dataset"], b["regime"])))
    fig, axes = _grid(len(groups), 4, 3.6, 2.9, share=True)
    for ax, (dataset, regime) in zip(axes, groups):
        g = b[(b["dataset"] == dataset) & (b["regime"] == regime)]
        present = [m for m in chosen if m in set(g["method"])]
        for j, m in enumerate(present):
            s = g[g["method"] == m]
            x = s["center"].to_numpy() + (j - (len(present) - 1) / 2) * 0.03
            ax.errorbar(x, s["mean"], yerr=np.nan_to_num(ci_half(s["sem"], s["count"])), marker="o", ms=4,
                        capsize=3, color=color(m, mc), label=mc.label(m))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.linspace(-0.8, 0.8, 5))
        ax.set_title(f"{dataset} / {regime}")
        ax.grid(alpha=0.3)
        missing = [mc.label(m) for m in chosen if m not in present]
        if missing:
            ax.set_title(f"{dataset} / {regime}\n(no data: {', '.join(missing)})", fontsize=9)
    _outer_labels(axes, "ERM test margin (bin centre)", "Mean margin delta vs ERM")
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    fig.suptitle("Margin delta by ERM margin (10 bins of width 0.2; error bars: 95% CI)")
    fig.tight_layout()
    return [{"file": _save(fig, folder, "margin_bins.png"), "title": "Margin delta by ERM-margin bin",
             "caption": "Test examples binned by the ERM model's margin; mean of (method − ERM) margin per bin, "
                        "pooled over seeds, with its 95% t-interval; shared axes. Empty bins are not drawn."}]


def _curves(df: pd.DataFrame, sweep_dir: Path) -> tuple[dict, dict]:
    """({(dataset, regime): {(method, variant): [per-seed Series of test accuracy (%) by epoch]}}, the same for
    diverged trials: drawn on their own, never in a mean)."""
    curves: dict[tuple, dict] = {}
    diverged: dict[tuple, dict] = {}
    for r in df[df["status"].isin(["done", "diverged"])].itertuples():
        rows = [x for x in read_jsonl(sweep_dir / "trials" / r.trial_id / "metrics.jsonl") if "test/acc" in x]
        if rows:
            s = pd.Series({int(x["epoch"]): 100 * float(x["test/acc"]) for x in rows})
            if r.status == "diverged":   # drawn on its own, never in a mean
                diverged.setdefault((r.dataset, r.regime), {}).setdefault((r.method, r.variant), []).append(s)
                continue
            curves.setdefault((r.dataset, r.regime), {}).setdefault((r.method, r.variant), []).append(s)
    for key in diverged:
        curves.setdefault(key, {})
    return curves, diverged


def _mean_ci(series: list) -> tuple:
    table = pd.concat(series, axis=1).sort_index()
    mean, n = table.mean(axis=1), table.notna().sum(axis=1)
    half = ci_half(table.std(axis=1, ddof=1) / np.sqrt(n), n)
    return mean, np.nan_to_num(half)


def training_curves(df: pd.DataFrame, sweep_dir: Path, folder: Path, notes: list, mc: Methods) -> list[dict]:
    """Small multiples: one row per method, one column per dataset x regime; each panel the method's mean test
    accuracy per epoch with its 95% CI band, and the reference (ERM) mean in grey; y shared per column. A
    diverged trial is a dotted line ending in x, never in a mean."""
    curves, diverged = _curves(df, sweep_dir)
    if not curves:
        notes.append("Training curves skipped: no finished trial logged test accuracy per epoch")
        return []
    lengths = [len(x) for by in curves.values() for ss in by.values() for x in ss]
    if max(lengths + [len(s) for d in diverged.values() for _, s in d]) < 2:
        notes.append("Training curves skipped: test accuracy was evaluated at one epoch only (see train.eval_every)")
        return []
    cells = list(curves)
    variants = sorted({mv for by in (*curves.values(), *diverged.values()) for mv in by},
                      key=lambda mv: (mc.rank(mv[0]), mv[1]))
    fig, grid = plt.subplots(len(variants), len(cells), figsize=(2.6 * len(cells) + 1, 1.5 * len(variants) + 0.8),
                             squeeze=False, sharex=True, sharey="col")
    for j, cell in enumerate(cells):
        ref = next((s for (m, _), s in curves[cell].items() if mc.is_reference(m)), None)
        for i, (method, variant) in enumerate(variants):
            ax = grid[i, j]
            if ref is not None and not mc.is_reference(method):
                ax.plot(*_xy(_mean_ci(ref)[0]), color="grey", linewidth=1, linestyle="--")
            if (method, variant) in curves[cell]:
                mean, half = _mean_ci(curves[cell][(method, variant)])
                ax.plot(mean.index, mean, color=color(method, mc), linewidth=1.4)
                ax.fill_between(mean.index, mean - half, mean + half, color=color(method, mc), alpha=0.2)
            for s in diverged.get(cell, {}).get((method, variant), []):   # one seed each, not in the mean
                ax.plot(s.index, s, color=color(method, mc), linestyle=":", linewidth=1, marker="x",
                        markevery=[len(s) - 1])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(f"{cell[0]} / {cell[1]}", fontsize=9)
            if j == 0:
                ax.set_ylabel(mc.label(variant), fontsize=8, rotation=0, ha="right", va="center")
    fig.supxlabel("Epoch", fontsize=9)
    fig.suptitle("Test accuracy (%) per epoch: mean over seeds, 95% CI band; grey dashed: ERM", fontsize=10,
                 y=1 - 0.15 / fig.get_figheight(), va="top")
    _fixed_margins(fig, top_in=0.75, bottom_in=0.5)
    return [{"file": _save(fig, folder, "training_curves.png"), "title": "Training curves",
             "caption": "One row per method, one column per dataset × regime: test accuracy after each evaluated "
                        "epoch, mean over finished seeds with its 95% t-interval band; the grey dashed line is ERM's "
                        "mean in the same column; y axes shared per column; dotted, ending in x: a diverged trial, "
                        "one line per seed (never in a mean)."}]


def _xy(series: pd.Series):
    return series.index, series.to_numpy()
