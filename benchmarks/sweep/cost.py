"""What a sweep will cost, before it starts (`benchmarks.run --dry-run`): per trial and in total, GPU-hours on
a named GPU (resources.gpu > 0) or CPU minutes on this machine, with every assumption printed.

    trial = fixed start-up + training + evaluations + end-of-trial pass + the method's extra passes
    training     = epochs x its training images x r / R       r: its cost per image / ERM's (a perf JSON row)
    evaluations  = evaluated epochs x evaluation images x f / R    f: molere.evaluation.FORWARD_COST
    extras       = MOLERE's pool passes; the out-of-fold ERM models of a key (K-1 runs on the pool per K)
R is ERM's training images/s: on a GPU from a `benchmarks.perf` JSON of that GPU (`--cost-perf`, e.g.
gpu_check/perf.json) or the reference below, scaled by pixels to the dataset's image side; on CPU timed
here on random data of the trial's shape (`calibrate_cpu`). Checked against real sweeps: docs/perf.md.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from molere.evaluation import FORWARD_COST, eval_epochs

DOCS = Path(__file__).resolve().parents[2] / "docs"
# ERM training images/s at 224 px, bf16, on the reference GPU: timm's RTX 3090 AMP training benchmark
# (results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv: vit_base_patch16_224 391, resnet50 826 img/s)
# x 4.5, an assumed H100-over-RTX-3090 speed-up; fp32 (TF32) assumed at half that.
REFERENCE_GPU = "H100 (reference figures, not measured)"
REFERENCE_IMG_S = {"vit": 391 * 4.5, "resnet": 826 * 4.5}
PERF_POOL = 1.2 / 1.08   # perf's MOLERE rows hold one pool pass (1.2 n) per epoch of its 1.08 n images
# one trial's fixed cost beyond its data's load time: GPU: model, weights, data index, workers; CPU: its
# process, W&B run and logging (`benchmarks.perf --settings trial`: 0.9 s with W&B offline; docs/perf.md#cost-estimate)
GPU_FIXED_S, CPU_FIXED_S = 120.0, 1.0
CPU_SWEEP_S = 30.0       # a CPU sweep's own start (Ray), report and dashboard (measured there too)
SETTING_OF = {"vit": ("vit_b16", "vit_tiny"), "resnet": ("resnet50", "resnet18"),
              "cnn": ("cnn-digits", "cnn-fashion"), "mlp": ("mlp-digits", "mlp-fashion")}


@dataclass
class Rates:
    where: str                          # the named GPU, or "this CPU"
    gpu: bool
    ratios: dict                        # (perf setting, row label, precision or None) -> cost per image / ERM's
    erm: dict                           # (perf setting, precision) -> ERM training images/s at `perf_size`
    perf_size: int = 224
    notes: list[str] = field(default_factory=list)
    cpu_rates: dict = field(default_factory=dict)   # (model, shape, batch) -> (images/s, forward cost)


def _arch(model) -> str:
    return (model.options.get("arch") or model.name.split("/", 1)[-1]) if model.name.startswith("timm") else model.name


def family(arch: str) -> str:
    return "vit" if "vit" in arch or "deit" in arch else "resnet" if "resnet" in arch else arch.split(".")[0]


def read_perf(path) -> tuple[dict, dict, str | None, int]:
    """(ratios, ERM images/s, GPU name, image size) of a `benchmarks.perf` JSON (see `Rates`)."""
    report = json.loads(Path(path).read_text())
    ratios, erm, size = {}, {}, 224
    for name, s in report.get("settings", {}).items():
        if "rows" in s:                                    # image settings: images/s per precision
            size = s.get("image_size", size)
            ips = {tuple(k[:-1].rsplit(" [", 1)): v["images_per_s"] for k, v in s["rows"].items()
                   if "images_per_s" in v}
            for (label, prec), v in ips.items():
                if ("erm", prec) in ips:
                    ratios[(name, label, prec)] = ips[("erm", prec)] / v
            erm.update({(name, prec): v for (label, prec), v in ips.items() if label == "erm"})
        elif s.get("epoch_s", {}).get("erm"):              # small settings: seconds per epoch
            ratios.update({(name, k, None): v / s["epoch_s"]["erm"] for k, v in s["epoch_s"].items()})
    return ratios, erm, report.get("gpu"), size


def load_rates(gpu: bool, perf: str | None = None) -> Rates:
    """The rates of a GPU (from `perf`, else the reference) or of this CPU (ratios: the shipped CPU tables)."""
    if perf:
        ratios, erm, name, size = read_perf(perf)
        return Rates(name or "the GPU of " + perf if gpu else "this CPU", gpu, ratios, erm, size,
                     [f"ERM throughput and method costs: measured, {perf}"])
    ratios, erm = {}, {}
    for f in ("perf_cpu_images.json", "perf.json"):
        ratios.update(read_perf(DOCS / f)[0])
    notes = ["method costs per image relative to ERM: docs/perf_cpu_images.json (timm ResNet-18 / ViT-Tiny on "
             "CPU) and docs/perf.json (small models); a GPU's own: --cost-perf gpu_check/perf.json"]
    if gpu:
        notes.insert(0, f"ERM throughput at 224 px, bf16: ViT-B/16 {REFERENCE_IMG_S['vit']:.0f}, ResNet-50 "
                        f"{REFERENCE_IMG_S['resnet']:.0f} img/s on an H100 = timm's RTX 3090 AMP training "
                        "benchmark (391 / 826 img/s) x 4.5 (assumed); fp32 half; other sizes scaled by pixels; "
                        "measure it: python -m benchmarks.gpu_check, then --cost-perf gpu_check/perf.json")
    return Rates(REFERENCE_GPU if gpu else "this CPU", gpu, ratios, erm, notes=notes)


def method_ratio(rates: Rates, arch: str, method: str, hp: dict, precision: str,
                 defaults: dict | None = None) -> tuple[float, str]:
    """The method's cost per training image relative to ERM's, and the perf row it came from (its own row
    when `hp` keeps its default look-ahead, else the matching variant's, else the nearest method's)."""
    settings = [s for s in SETTING_OF.get(family(arch), ()) if any(k[0] == s for k in rates.ratios)]
    settings += sorted({k[0] for k in rates.ratios} - set(settings))
    base = "lrw" if method.startswith("lrw_") else method
    names = []
    if hp.get("lookahead_scope") == "head" != (defaults or {}).get("lookahead_scope"):
        names += [f"{method}, head-only", f"{base}, head-only", f"{base} head-only",
                  "mwn, head-only" if hp.get("meta_every", 1) == 1 else "lrw, head-only"]
    if hp.get("hypergrad") == "finite_diff":
        names += [f"{method}, finite_diff", f"{base}, finite_diff"]
    names += [method, base]
    for s in settings:
        for prec in (precision, "bf16", "fp32", None):
            for n in names:
                if (s, n, prec) in rates.ratios:
                    return rates.ratios[(s, n, prec)], f"{s}/{n}" + (f" [{prec}]" if prec else "")
    return 1.0, "no perf row: ERM's cost"


def gpu_rate(rates: Rates, arch: str, size: int, precision: str) -> float:
    """ERM training images/s on the GPU for `arch` at side `size` (pixels scaling from the measured size)."""
    fam, prec = family(arch), "bf16" if precision != "fp32" else "fp32"
    measured = [v for (s, p), v in rates.erm.items() if s in SETTING_OF.get(fam, ()) and p == prec]
    if measured:
        at = measured[0]
    else:
        at = REFERENCE_IMG_S.get(fam, REFERENCE_IMG_S["resnet"]) * (0.5 if prec == "fp32" else 1.0)
    return at * (rates.perf_size / size) ** 2


def calibrate_cpu(trial, sizes, threads: int) -> tuple[float, float]:
    """(ERM training images/s, forward cost per image / a training step's) of the trial's model on this CPU:
    an ERM trainer timed on random in-memory data of the trial's shape and batch size."""
    import torch

    from benchmarks.models import model_factory
    from benchmarks.perf_setup import synthetic_task
    from molere.config import TrainConfig
    from molere.trainer import Trainer
    cfg = trial.config
    shape, bs = tuple(sizes.input_shape), int(cfg.train.batch_size)
    task = synthetic_task(shape, 4 * bs, sizes.num_classes)
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        t = Trainer(model_factory(cfg.model.name, sizes.num_classes, shape, cfg.model.options)(), task,
                    TrainConfig(epochs=3, batch_size=bs, lr=0.01))
        t.train_epoch()
        t0 = time.perf_counter()
        t.train_epoch()
        step = (time.perf_counter() - t0) / len(task.train)
        t0 = time.perf_counter()
        t.outputs(task.train)
        fwd = (time.perf_counter() - t0) / len(task.train)
    finally:
        torch.set_num_threads(before)
    return 1 / step, min(1.0, fwd / step)


@dataclass
class TrialCost:
    seconds: float
    parts: dict[str, float]
    row: str


def training_images(method_cls, hp: dict, sizes) -> int:
    """Images per epoch: the pool minus its δ validation split for the methods that pool train + val."""
    if method_cls.trains_on_val:
        return round(sizes.pool * (1 - hp.get("delta", 0.0)))
    return sizes.train


def evaluated_images(cfg, method_cls, sizes, n_train: int) -> int:
    """Images the trial's evaluations forward, over all its evaluated epochs (molere.evaluation's rules)."""
    tr = cfg.train
    per_eval = sizes.test + sizes.selection + sum(sizes.extra.values()) + (0 if method_cls.trains_on_val else sizes.val)
    epochs = eval_epochs(tr.eval_every, n_train, per_eval, tr.epochs)
    selection_evals = len(epochs) if tr.eval_selection == "every" else 1
    return len(epochs) * (per_eval - sizes.selection) + selection_evals * sizes.selection


def molere_passes(hp: dict, epochs: int) -> int:
    """MOLERE's pool passes: the first split's statistics, then one before every re-split (molere.molere)."""
    warm = hp.get("meta_warmup_epochs", hp.get("warmup_epochs"))   # the name before the rename: older stores
    warm = warm if warm is not None else int(hp.get("warmup_fraction", 0.25) * epochs + 0.5)
    return 1 + max(0, epochs - max(warm, 1))


def trial_cost(trial, sizes, rates: Rates, threads: int = 1, oof_folds=()) -> TrialCost:
    """Seconds one trial takes on `rates`' device, by part; an ERM trial also carries the out-of-fold models of
    its key (`oof_folds`: the fold counts K the planned methods declare, `molere.reference`)."""
    from molere.registry import METHODS
    cfg, method = trial.config, trial.labels["method"]
    cls, hp, tr, arch = METHODS.get(method), cfg.method.hparams, cfg.train, _arch(cfg.model)
    if rates.gpu:
        rate, f = gpu_rate(rates, arch, sizes.image_size or 224, tr.precision), FORWARD_COST
    else:
        key = (cfg.model.model_dump_json(), tuple(sizes.input_shape), tr.batch_size, threads)
        if key not in rates.cpu_rates:
            rates.cpu_rates[key] = calibrate_cpu(trial, sizes, threads)
        rate, f = rates.cpu_rates[key]
    ratio, row = method_ratio(rates, arch, method, hp, tr.precision, cls.Hparams().model_dump())
    n = training_images(cls, hp, sizes)
    parts = {}
    if method == "molere":   # its perf row holds a pool pass per epoch; count the passes it really makes
        ratio = max(1.0, ratio - PERF_POOL * f)
        parts["pool passes"] = molere_passes(hp, tr.epochs) * sizes.pool * f / rate
    parts["training"] = tr.epochs * n * ratio / rate
    parts["evaluation"] = evaluated_images(cfg, cls, sizes, n) * f / rate
    parts["end of trial"] = n * f / rate
    if oof_folds:   # K models per K, each trained on (K-1)/K of the pool, each scoring the rest
        parts["out-of-fold models"] = sum(tr.epochs * sizes.pool * (k - 1) + sizes.pool * f for k in oof_folds) / rate
    parts["start-up"] = GPU_FIXED_S if rates.gpu else CPU_FIXED_S + sizes.load_s
    return TrialCost(sum(parts.values()), parts, row)


def _sizes_of(trials) -> tuple[dict, list[str]]:
    from .sizes import split_sizes
    out, problems = {}, []
    for t in trials:
        key = t.config.dataset.model_dump_json()
        if key not in out:
            try:
                out[key] = split_sizes(t.config.dataset)
            except ValueError as exc:
                out[key] = None
                problems.append(f"{exc}: its trials are left out of the estimate")
    return out, problems


def estimate(trials, sweep, status: dict[str, str], perf: str | None = None,
             cores: int | None = None) -> tuple[dict[str, str], list[str]]:
    """(trial id -> its estimate as text, the summary and assumption lines) of the trials not done yet."""
    from .sizes import SOURCE
    gpu, cpu = sweep.resources.gpu > 0, max(1, int(sweep.resources.cpu))
    rates = load_rates(gpu, perf)
    sizes, notes = _sizes_of(trials)
    oof: dict[str, set] = {}
    for t in trials:
        oof.setdefault(t.erm_id, set()).update(t.needs.oof_folds)
    costs = {t.trial_id: trial_cost(t, sizes[t.config.dataset.model_dump_json()], rates, cpu,
                                    sorted(oof.get(t.trial_id, ())) if t.trial_id == t.erm_id else ())
             for t in trials if sizes[t.config.dataset.model_dump_json()] is not None}
    todo = {k: c for k, c in costs.items() if status.get(k) != "done"}
    total = sum(c.seconds for c in todo.values())
    parts = {}
    for c in todo.values():
        for k, v in c.parts.items():
            parts[k] = parts.get(k, 0.0) + v
    if gpu:
        hours = lambda s: s * sweep.resources.gpu / 3600   # noqa: E731
        text = {k: f"{hours(c.seconds):.2f} GPU-h" for k, c in costs.items()}
        split = ", ".join(f"{k} {hours(v):.1f}" for k, v in parts.items())
        per_node = max(1, int(8 // sweep.resources.gpu))
        head = (f"estimate: {len(todo)} trials to run, {hours(total):.1f} GPU-hours on {rates.where} ({split}); "
                f"about {total / per_node / 3600:.1f} h on one 8-GPU node")
        forward = f"an evaluation forward costs {FORWARD_COST:.2f} of an ERM training step per image"
    else:
        at_once = max(1, (cores or os.cpu_count() or 1) // cpu)
        text = {k: f"{c.seconds / 60:.1f} min" for k, c in costs.items()}
        split = ", ".join(f"{k} {v / 60:.1f}" for k, v in parts.items())
        head = (f"estimate: {len(todo)} trials to run, {total / 60:.1f} CPU-minutes on {rates.where} at {cpu} CPU"
                f"{'s' * (cpu > 1)} each ({split}); about {(CPU_SWEEP_S + total / at_once) / 60:.1f} min of wall "
                f"clock, {at_once} at once")
        forward = "ERM's training and forward speed: timed here on random data of each model's input"
    rows = sorted({f"{t.labels['method']}: {costs[t.trial_id].row}" for t in trials if t.trial_id in costs})
    lines = [head, "assumptions:", *rates.notes, forward,
             f"dataset sizes: {SOURCE}",
             f"start-up per trial: {GPU_FIXED_S:.0f} s" if gpu else
             f"start-up per trial: {CPU_FIXED_S:.0f} s plus the data's load time measured here; "
             f"per sweep {CPU_SWEEP_S:.0f} s",
             "MOLERE: its perf row less one pool pass per epoch, plus the passes it makes; ERM: plus the "
             "out-of-fold models its key's methods declare (K folds = K-1 training runs on the pool)",
             "perf rows used: " + "; ".join(rows), *notes]
    return text, [lines[0], lines[1], *(f"  - {x}" for x in lines[2:])]
