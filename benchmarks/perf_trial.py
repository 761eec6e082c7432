"""The fixed cost of one sweep trial (`python -m benchmarks.perf --settings trial`).

A one-epoch ERM trial on digits (the quickstart's MLP) runs through the sweep worker's own path
(`benchmarks.sweep.worker.run_one`: a fork-server child process, its W&B run, the result store and its
verification), with W&B offline and disabled, interleaved, in a temporary store; the first trial of
each (the fork server's start) is not timed. Reported, as medians: seconds per trial, the trial's own
`run_trial` time (data, model, one epoch, evaluation, outputs) and the difference (process, W&B, store):
what every one of a sweep's trials pays however short its training. Ray's scheduling is not included.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

SWEEP = """name: trial-overhead
datasets: [{name: digits}]
regimes: [{kind: clean}]
model: {name: mlp, options: {hidden: [128]}}
methods: {erm: {}}
seeds: %s
train: {epochs: 1, batch_size: 128, lr: 0.1, eval_every: 1}
resources: {cpu: 1, gpu: 0, time_limit_s: 600}
wandb: {project: molere-bench-perf, mode: %s}
"""
MODES = ("offline", "disabled")


def _specs(folder: Path, mode: str, n: int) -> list[dict]:
    from benchmarks.sweep.plan import expand_trials
    from benchmarks.sweep.schema import load_sweep
    from benchmarks.sweep.worker import trial_spec
    from benchmarks.wandb_io.log import wandb_settings
    path = folder / f"{mode}.yaml"
    path.write_text(SWEEP % (list(range(n)), mode))
    sweep = load_sweep(path, results=str(folder / mode))
    settings = wandb_settings(sweep)
    return [trial_spec(t, sweep, settings) for t in expand_trials(sweep)]


def trial_overhead(repeats: int = 4, on_row=None) -> dict:
    """{"W&B offline" | "W&B disabled": {"trial_s", "run_trial_s", "fixed_s", "trials"}}; `on_row(label, row)`
    is called as each row is measured."""
    import json

    from benchmarks.sweep.worker import run_one
    out = {}
    with tempfile.TemporaryDirectory(prefix="perf-trial-") as tmp:
        specs = {m: _specs(Path(tmp), m, repeats + 1) for m in MODES}
        times: dict[str, list] = {m: [] for m in MODES}
        for i in range(repeats + 1):
            for m in MODES:
                t0 = time.perf_counter()
                status = run_one(specs[m][i])["status"]
                wall = time.perf_counter() - t0
                if status != "done":
                    raise RuntimeError(f"perf trial ({m}) {status}; see {specs[m][i]['out_dir']}/trial.log")
                own = json.loads((Path(specs[m][i]["out_dir"]) / "result.json").read_text())["wall_time_s"]
                if i:     # the first trial starts the fork server
                    times[m].append((wall, own))
        for m in MODES:
            wall = statistics.median(w for w, _ in times[m])
            own = statistics.median(o for _, o in times[m])
            out[f"W&B {m}"] = {"trial_s": wall, "run_trial_s": own, "fixed_s": wall - own, "trials": repeats}
            if on_row:
                on_row(f"W&B {m}", out[f"W&B {m}"])
    return out


def print_header() -> None:
    print(f"\n## trial  (one-epoch ERM on digits through the sweep worker; medians)\n"
          f"{'fixed cost of one trial':<34} {'trial s':>10} {'run_trial s':>12} {'fixed s':>8}", flush=True)


def print_row(label: str, row: dict) -> None:
    print(f"{label:<34} {row['trial_s']:10.2f} {row['run_trial_s']:12.2f} {row['fixed_s']:8.2f}", flush=True)
