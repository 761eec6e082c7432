"""The one W&B path: a run per trial, opened inside the trial (never a driver-side logger callback).

id = trial id, group = sweep name, job_type = method, tags = [dataset, regime, seed-N]. Config = the
resolved trial config with `regime` (its label, e.g. "symmetric-0.4"; parameters under `regime_config`),
`hparams_id`, `trial_id` and `env` (package versions, git commit, host, device). Logged against the
trainer's global step: every `log_every` steps the step loss, lr, weight and gradient norms, images/s and
the method's per-step statistics; every epoch the epoch metrics; at the end the final accuracies, the gain
over the ERM run of the same key, margin histograms and binned margin deltas vs ERM, and the trial's
store files as an artifact. System metrics are on. A retried or resumed trial continues the same run
after the last step its run files hold (no step twice). A logging failure is printed to
stderr (the trial's log) and never fails the trial.
"""
from __future__ import annotations

import math
import netrc
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from molere.trainer import Callback

MIN_WANDB = "0.19.10"          # the `reinit` values used here; the declared minimum (wandb-workspaces) is higher
STORE_FILES = ("config.json", "result.json", "metrics.jsonl", "margins.npz", "failed.json")
STEP_KEY = "trainer/step"   # the optimizer step, the x-axis of per-step keys (per-epoch keys: "epoch")


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


def check_wandb(version: str | None = None) -> None:
    """Raise ValueError (one line) when the installed wandb is older than what the trial logging needs."""
    from packaging.version import Version
    if version is None:
        import wandb
        version = wandb.__version__
    if Version(version) < Version(MIN_WANDB):
        raise ValueError(f"wandb {version} is installed, the W&B logging needs wandb>={MIN_WANDB}; "
                         "run `pip install -U 'wandb[workspaces]'` or set wandb.mode: disabled")


def _warn(what: str, exc: BaseException) -> None:
    print(f"[wandb] W&B {what} failed, trial continues: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def git_commit(path: str | os.PathLike | None = None) -> dict:
    """{"commit", "dirty"} of the checkout holding this package (None values outside a git checkout)."""
    where = str(path or Path(__file__).resolve().parents[1])
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = None if commit is None else bool(subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
            text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit = dirty = None
    return {"commit": commit, "dirty": dirty}


def wandb_settings(sweep) -> dict:
    """The W&B settings every trial of `sweep` (a benchmarks.sweep.schema.Sweep) logs with."""
    w = sweep.wandb
    return {"project": w.project, "entity": w.entity, "mode": resolve_mode(w.mode),
            "dir": str(sweep.directory.resolve() if w.dir is None else w.dir),
            "log_every_steps": w.log_every_steps, "stats_interval_s": w.stats_interval_s,
            "flush_interval_s": w.flush_interval_s, "git": git_commit()}


def environment(device: str = "auto", git: dict | None = None) -> dict:
    """Package versions, git commit (`git`: as the driver found it, else looked up here), host and device of
    this process (the `env` block of a run's config)."""
    import torch

    from benchmarks.trial.execute import resolve_device, versions
    device = resolve_device(device)
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    return {"packages": versions(), "git": git or git_commit(), "host": socket.gethostname(), "device": device,
            "device_name": name, "cuda": torch.version.cuda, "cpu_count": os.cpu_count()}


def run_config(config: dict, labels: dict, trial_id: str, env: dict) -> dict:
    """The W&B config of a trial: its resolved config, one `regime` label, `hparams_id`, `env`."""
    return {**config, "regime": labels["regime"], "regime_config": config.get("regime"),
            "hparams_id": labels.get("hparams_id"), "trial_id": trial_id, "env": env}


def _norms(model) -> dict:
    import torch
    params = [p for p in model.parameters()]
    grads = [p.grad for p in params if p.grad is not None]
    out = {"weights/param_norm": torch.linalg.vector_norm(torch.stack([p.detach().norm() for p in params])).item()}
    if grads:
        out["weights/grad_norm"] = torch.linalg.vector_norm(torch.stack([g.detach().norm() for g in grads])).item()
    return out


class TrialLogger(Callback):
    """Trainer callback (`on_step_end`, `on_epoch_end`) plus the end-of-trial summary of one W&B run."""

    def __init__(self, settings: dict | None, *, trial_id: str, sweep: str, labels: dict, config: dict):
        self.run, self.step, self.last, self.defined = None, 0, -1, set()
        self.every = int((settings or {}).get("log_every_steps") or 50)
        self.images, self.t_last = 0.0, None
        if not settings or settings.get("mode") == "disabled":
            return
        try:
            import wandb
            from benchmarks.wandb_io.reader import last_step
            check_wandb(wandb.__version__)
            run_dir = Path(settings["dir"])
            self.last = last_step(run_dir, trial_id)
            run_dir.mkdir(parents=True, exist_ok=True)
            name = f"{labels['method']}/{labels['dataset']}/{labels['regime']}/seed-{labels['seed']}"
            env = environment(config.get("train", {}).get("device", "auto"), settings.get("git"))
            extra = {"x_transaction_log_flush_interval": float(settings.get("flush_interval_s") or 5.0)}
            if settings.get("stats_interval_s") is not None:
                extra["x_stats_sampling_interval"] = float(settings["stats_interval_s"])
            self.run = wandb.init(
                project=settings.get("project"), entity=settings.get("entity"), id=trial_id, name=name,
                group=sweep, job_type=labels["method"], config=run_config(config, labels, trial_id, env),
                resume="allow", dir=str(run_dir), tags=[labels["dataset"], labels["regime"], f"seed-{labels['seed']}"],
                mode=settings["mode"], reinit="finish_previous",
                settings=wandb.Settings(silent=False, console="off", disable_git=True, save_code=False,
                                        disable_job_creation=True, x_save_requirements=False, **extra))
            self.last = max(self.last, int(getattr(self.run, "starting_step", 0) or 0) - 1)
            if self.last >= 0:
                print(f"[wandb] run {trial_id} resumed: steps up to {self.last} are logged already", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - logging must never fail a trial
            self.run = None
            _warn("init", exc)

    def _log(self, data: dict, step: int, axis: str | None = None) -> None:
        """Log at `step` unless an earlier attempt of this run logged it already (no duplicate steps); keys new
        to the run are plotted against `axis` ("epoch" or STEP_KEY) in W&B (`define_metric`)."""
        if self.run is None or step <= self.last:
            return
        try:
            new = [k for k in data if axis and k not in self.defined and k not in (axis, "epoch", STEP_KEY)]
            for key in new:
                self.run.define_metric(key, step_metric=axis)
            self.defined.update(new)
            self.run.log(data, step=step)
            self.step = step
        except Exception as exc:  # noqa: BLE001
            _warn("log", exc)

    # ---- trainer callbacks ------------------------------------------------------------------------
    def on_step_end(self, trainer, step: int, metrics: dict) -> None:
        if self.run is None:
            return
        now = time.perf_counter()
        if self.t_last is None:      # the first step includes start-up: throughput counts from here
            self.t_last = now
            return
        self.images += metrics.get("train/batch_size", 0.0)
        if step % self.every or step <= self.last:
            return
        try:
            row = {k: v for k, v in _scalars(metrics).items() if k != "train/batch_size"}
            row["perf/images_per_s"] = self.images / max(now - self.t_last, 1e-9)
            row["epoch"], row[STEP_KEY] = trainer.epoch + 1, step
            row.update(_norms(trainer.model))
        except Exception as exc:  # noqa: BLE001
            _warn("step statistics", exc)
            return
        self.images, self.t_last = 0.0, now
        self._log(row, step, STEP_KEY)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        self._log({**_scalars(metrics), "epoch": epoch}, trainer.global_step, "epoch")

    # ---- end of the trial -----------------------------------------------------------------------
    def final(self, result: dict, margins: dict, erm: dict | None, store_dir: str | os.PathLike | None = None) -> None:
        """Summary: final metrics, gain over ERM (points), margin histograms, binned deltas vs ERM, artifact.

        `margins`: this trial's saved arrays; `erm`: {"metrics": ..., "margins": ...} of the ERM run
        of the same key when it is done (None otherwise, or for ERM itself)."""
        if self.run is None:
            return
        try:
            import wandb

            from molere.margins import bin_by_reference, paired_deltas

            self.run.summary.update({f"final/{k}": v for k, v in _scalars(result["metrics"]).items()})
            self.run.summary["status"] = result.get("status", "done")
            if result.get("status") == "diverged":   # not a result: no gain over ERM is logged
                self.run.summary.update(diverged_epoch=result["diverged_epoch"], diverged_reason=result["diverged_reason"])
                erm = None
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
                    media["test/margin_delta_hist"] = wandb.Histogram(np.asarray(delta))
                    self.run.summary["test/margin_delta_mean"] = float(np.mean(delta)) if len(delta) else None
                    rows = [[b["center"], b["lo"], b["hi"], b["count"], b["mean"], b["sem"]]
                            for b in bin_by_reference(ref, delta) if b["count"]]
                    table = wandb.Table(columns=["erm_margin", "lo", "hi", "count", "mean_delta", "sem"], data=rows)
                    media["test/margin_delta_vs_erm"] = table
                    media["test/margin_delta_vs_erm_plot"] = wandb.plot.line(
                        table, "erm_margin", "mean_delta", title="test margin change vs ERM, by ERM margin")
            if media:
                self._log(media, self.step if self.step > self.last else self.last + 1)
        except Exception as exc:  # noqa: BLE001
            _warn("summary", exc)
        self.store_artifact(store_dir, result.get("status", "done"))

    def store_artifact(self, store_dir: str | os.PathLike | None, status: str) -> None:
        """The trial's store files (result.json, metrics, margins, ...) as a `trial-result` artifact."""
        if self.run is None or store_dir is None:
            return
        try:
            import wandb
            art = wandb.Artifact(f"trial-{self.run.id}", type="trial-result", metadata={"status": status})
            for name in STORE_FILES:
                if (Path(store_dir) / name).exists():
                    art.add_file(str(Path(store_dir) / name), name=name)
            self.run.log_artifact(art)
        except Exception as exc:  # noqa: BLE001
            _warn("artifact", exc)

    def failed(self, error: str, store_dir: str | os.PathLike | None = None, log_file: str | None = None) -> None:
        if self.run is not None:
            try:
                self.run.summary["error"] = error
                if log_file:
                    self.run.summary["log_file"] = log_file
            except Exception as exc:  # noqa: BLE001
                _warn("summary", exc)
            self.store_artifact(store_dir, "failed")

    def finish(self, exit_code: int = 0) -> None:
        """Finish the run and stop this process's wandb service: only that guarantees the run file is
        complete on disk when this returns (finish() alone may leave its tail in a buffer)."""
        if self.run is not None:
            try:
                import wandb
                self.run.finish(exit_code=exit_code)
                wandb.teardown()
            except Exception as exc:  # noqa: BLE001
                _warn("finish", exc)
            self.run = None
