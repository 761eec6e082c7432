"""Log the report to the sweep's W&B summary run (job_type "summary", group = sweep name): every table as a
numeric, sortable `wandb.Table` (the data behind the display table), every figure as a `wandb.Image`, and
the report folder as a `report` artifact. The run id is stable per sweep and report folder, so
rebuilding a report resumes the same run instead of adding another. Offline unless the settings say
otherwise; any failure is returned as a message, never raised, so the report files are never lost."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def flat_frame(frame):
    """Dict-valued cells (paired statistics) spread into "<column> <key>" columns; everything else as is."""
    import pandas as pd
    out = {}
    for col in frame.columns:
        values = frame[col]
        if values.map(lambda v: isinstance(v, dict)).any():
            keys = list(dict.fromkeys(k for v in values if isinstance(v, dict) for k in v))
            for k in keys:
                out[f"{col} {k}"] = values.map(lambda v, k=k: v.get(k) if isinstance(v, dict) else None)
        else:
            out[col] = values
    return pd.DataFrame(out, index=frame.index)


def wandb_table(frame):
    """A sortable wandb.Table: numbers stay numbers (NaN -> empty), dicts are spread into columns."""
    import wandb
    f = flat_frame(frame)
    f = f.astype(object).where(f.notna(), None)
    rows = [[v.item() if hasattr(v, "item") else v for v in row] for row in f.values.tolist()]
    return wandb.Table(columns=[str(c) for c in f.columns], data=rows)


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
            numeric = frames.get("numeric", {})
            for t in tables:   # the numbers behind a table where the report has them, else its display cells
                payload[f"tables/{t.name}"] = wandb_table(numeric.get(t.name, t.frame))
            for name, frame in frames.items():
                if name != "numeric":
                    payload[f"data/{name}"] = wandb_table(frame)
            for fig in figures:
                payload[f"figures/{Path(fig['file']).stem}"] = wandb.Image(str(fig_dir / fig["file"]),
                                                                           caption=fig["title"])
            run.log(payload)
            art = wandb.Artifact(f"report-{sweep_name}", type="report", metadata={"sweep": sweep_name})
            art.add_dir(str(fig_dir.parent))
            run.log_artifact(art)
            run_dir = os.path.dirname(run.dir)
        finally:
            run.finish()
            wandb.teardown()    # the run file is complete on disk only once the service has stopped
        return {"logged": True, "run_dir": run_dir, "error": None}
    except Exception as exc:  # noqa: BLE001 — logging must never cost the report
        return {"logged": False, "run_dir": None, "error": f"{type(exc).__name__}: {exc}"}
