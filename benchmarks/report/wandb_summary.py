"""Log the report to the sweep's W&B summary run (job_type "summary", group = sweep name): every table as a
`wandb.Table`, every figure as a `wandb.Image`. The run id is stable per sweep and report folder, so
rebuilding a report resumes the same run instead of adding another. Offline unless the settings say
otherwise; any failure is returned as a message, never raised, so the report files are never lost."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def log_summary(sweep_name: str, tables: list, frames: dict, figures: list[dict], fig_dir: Path,
                settings: dict, extra_config: dict | None = None) -> dict:
    """Returns {"logged": bool, "run_dir": str | None, "error": str | None}; mode "disabled" logs nothing."""
    mode = settings.get("mode") or os.environ.get("WANDB_MODE") or "offline"
    if mode == "disabled":
        return {"logged": False, "run_dir": None, "error": None}
    try:
        import wandb
        wdir = Path(settings.get("dir") or fig_dir.parent)
        wdir.mkdir(parents=True, exist_ok=True)
        run_id = "summary-" + hashlib.sha1(f"{sweep_name}:{fig_dir.resolve()}".encode()).hexdigest()[:12]
        run = wandb.init(id=run_id, resume="allow", project=settings.get("project") or "molere-bench",
                         entity=settings.get("entity"), mode=mode, dir=str(wdir),
                         group=settings.get("group") or sweep_name, job_type="summary",
                         name=f"{sweep_name}-summary", config={"sweep": sweep_name, **(extra_config or {})}, reinit="create_new",
                         settings=wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                                 x_disable_machine_info=True, disable_git=True, save_code=False))
        try:
            payload = {}
            for t in tables:
                payload[f"tables/{t.name}"] = wandb.Table(columns=[str(c) for c in t.frame.columns],
                                                          data=t.frame.astype(str).values.tolist())
            for name, frame in frames.items():
                f = frame.astype(object).where(frame.notna(), None)
                payload[f"data/{name}"] = wandb.Table(columns=[str(c) for c in f.columns], data=f.values.tolist())
            for fig in figures:
                payload[f"figures/{Path(fig['file']).stem}"] = wandb.Image(str(fig_dir / fig["file"]),
                                                                           caption=fig["title"])
            run.log(payload)
            run_dir = os.path.dirname(run.dir)
        finally:
            run.finish()
        return {"logged": True, "run_dir": run_dir, "error": None}
    except Exception as exc:  # noqa: BLE001 — logging must never cost the report
        return {"logged": False, "run_dir": None, "error": f"{type(exc).__name__}: {exc}"}
