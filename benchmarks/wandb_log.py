"""The one W&B path: a run per trial, opened inside the trial (never a driver-side logger callback).

id = trial id, group = sweep name, job_type = method, tags = [dataset, regime, seed-N], config = the
resolved trial config. Logged: per-epoch metrics, final accuracies, the gain over the ERM run of
the same key (accuracy points), the test margin histogram, and binned margin deltas vs ERM as a
table and a line plot. A logging failure warns and never fails the trial.
"""
from __future__ import annotations

import math
import netrc
import os
import warnings
from pathlib import Path

import numpy as np

def resolve_mode(mode: str) -> str:
    """`auto`: WANDB_MODE if set, online with an API key (env or ~/.netrc login), else offline."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("offline", "online", "disabled"):
        return env
    if env == "dryrun":
        return "offline"
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
        if os.path.exists(path) and netrc.netrc(path).authenticators(host):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


def _warn(what: str, exc: BaseException) -> None:
    warnings.warn(f"W&B {what} failed, trial continues: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch" and math.isfinite(v)}


class TrialLogger:
    """Trainer callback (`on_epoch_end`) plus the end-of-trial summary of one W&B run."""

    def __init__(self, settings: dict | None, *, trial_id: str, sweep: str, labels: dict, config: dict):
        self.run, self.step = None, 0
        if not settings or settings.get("mode") == "disabled":
            return
        try:
            import wandb

            run_dir = Path(settings["dir"])
            run_dir.mkdir(parents=True, exist_ok=True)
            name = f"{labels['method']}/{labels['dataset']}/{labels['regime']}/seed-{labels['seed']}"
            self.run = wandb.init(
                project=settings.get("project"), entity=settings.get("entity"), id=trial_id, name=name,
                group=sweep, job_type=labels["method"], config=config, resume="allow", dir=str(run_dir),
                tags=[labels["dataset"], labels["regime"], f"seed-{labels['seed']}"], mode=settings["mode"],
                reinit="finish_previous",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
                                        x_disable_machine_info=True, disable_git=True, save_code=False,
                                        disable_job_creation=True))
        except Exception as exc:  # noqa: BLE001 - logging must never fail a trial
            self.run = None
            _warn("init", exc)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        if self.run is None:
            return
        try:
            self.step = epoch
            self.run.log(_scalars(metrics), step=epoch)
        except Exception as exc:  # noqa: BLE001
            _warn("log", exc)

    def final(self, result: dict, margins: dict, erm: dict | None) -> None:
        """Summary: final metrics, gain over ERM (points), margin histogram, binned deltas vs ERM.

        `margins`: this trial's saved arrays; `erm`: {"metrics": ..., "margins": ...} of the ERM run
        of the same key when it is done (None otherwise, or for ERM itself)."""
        if self.run is None:
            return
        try:
            import wandb

            from molere.margins import bin_by_reference, paired_deltas

            self.run.summary.update({f"final/{k}": v for k, v in _scalars(result["metrics"]).items()})
            media = {}
            if "test_margins" in margins:
                media["test/margin_hist"] = wandb.Histogram(np.asarray(margins["test_margins"]))
            if erm is not None:
                acc, ref_acc = result["metrics"].get("test/acc"), erm["metrics"].get("test/acc")
                if acc is not None and ref_acc is not None:
                    self.run.summary["erm/test_acc"] = ref_acc
                    self.run.summary["gain_over_erm/test_acc"] = 100.0 * (acc - ref_acc)
                if "test_margins" in margins and "test_margins" in erm["margins"]:
                    ref, delta = paired_deltas(margins["test_ids"], margins["test_margins"],
                                               erm["margins"]["test_ids"], erm["margins"]["test_margins"])
                    rows = [[b["center"], b["lo"], b["hi"], b["count"], b["mean"], b["sem"]]
                            for b in bin_by_reference(ref, delta) if b["count"]]
                    table = wandb.Table(columns=["erm_margin", "lo", "hi", "count", "mean_delta", "sem"], data=rows)
                    media["test/margin_delta_vs_erm"] = table
                    media["test/margin_delta_vs_erm_plot"] = wandb.plot.line(
                        table, "erm_margin", "mean_delta", title="test margin change vs ERM, by ERM margin")
            if media:
                self.run.log(media, step=self.step)
        except Exception as exc:  # noqa: BLE001
            _warn("summary", exc)

    def failed(self, error: str) -> None:
        if self.run is not None:
            try:
                self.run.summary["error"] = error
            except Exception as exc:  # noqa: BLE001
                _warn("summary", exc)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as exc:  # noqa: BLE001
                _warn("finish", exc)
            self.run = None
