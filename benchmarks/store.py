"""The result store, the source of truth of every run: one directory per trial, written atomically.

<run>/config.json     resolved trial configuration (+ trial id, versions)
<run>/metrics.jsonl   append-only per-epoch metrics (one JSON object per line, fsync'ed)
<run>/checkpoint.pt   optional last checkpoint (epoch end or step) for resuming an interrupted trial
<run>/margins.npz     per-example ids / labels / predictions / margins of every evaluated split
<run>/result.json     final metrics and dataset info
<run>/failed.json     reason and traceback when the trial failed
<run>/done            completion marker, written last
"""
from __future__ import annotations

import json
import os
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


CHECKPOINT_FORMAT = "molere-bench-checkpoint/1"
# Types beyond torch's weights_only defaults that a checkpoint may hold: none (trainer states are
# tensors, containers and Python scalars only), so `torch.load(weights_only=True)` never runs a global.
CHECKPOINT_SAFE_GLOBALS: list = []


class CheckpointDiscarded(UserWarning):
    """A checkpoint that is corrupt, foreign (another trial or format) or unsafe was deleted."""


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(Path(path), (json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n").encode())


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_jsonl(path: Path) -> list[dict]:
    """Parse a JSON-lines file, ignoring a torn last line (a write cut by a crash)."""
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class RunDir:
    """One trial's directory in the store."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def status(self) -> str:
        if self.file("done").exists():
            return "done"
        if self.file("failed.json").exists():
            return "failed"
        return "incomplete" if self.file("config.json").exists() else "absent"

    def start(self, config: dict, checkpoint: bool = False) -> dict | None:
        """Prepare a (re)run: write the config, drop partial results; returns the checkpointed trainer
        state to resume from (None: from scratch; with `checkpoint=False` no checkpoint is read)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in ("result.json", "failed.json", "margins.npz", "done"):
            self.file(name).unlink(missing_ok=True)
        write_json(self.file("config.json"), config)
        state = self.load_checkpoint(config.get("trial_id")) if checkpoint else None
        resume = int(state["epoch"]) if state is not None else 0
        kept = [r for r in read_jsonl(self.file("metrics.jsonl")) if r.get("epoch", 0) <= resume]
        _atomic_write(self.file("metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in kept).encode())
        if state is None:
            self.file("checkpoint.pt").unlink(missing_ok=True)
        return state

    def append_metrics(self, row: dict) -> None:
        with open(self.file("metrics.jsonl"), "a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def save_checkpoint(self, state: dict, trial_id: str | None = None) -> None:
        """Write a trainer state atomically (a crash mid-write leaves the previous checkpoint)."""
        import torch
        path = self.file("checkpoint.pt")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"format": CHECKPOINT_FORMAT, "trial_id": trial_id, "state": state}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load_checkpoint(self, trial_id: str | None = None) -> dict | None:
        """The trainer state of this trial's checkpoint, loaded with `weights_only=True`; a corrupt,
        foreign or unsafe file is deleted with a `CheckpointDiscarded` warning (None: start from scratch)."""
        import torch
        path = self.file("checkpoint.pt")
        if not path.exists():
            return None
        try:
            with torch.serialization.safe_globals(CHECKPOINT_SAFE_GLOBALS):
                blob = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
                raise ValueError("not a molere-bench checkpoint")
            if blob.get("trial_id") != trial_id:
                raise ValueError(f"it belongs to trial {str(blob.get('trial_id'))[:40]!r}")
            if not isinstance(blob.get("state"), dict) or "epoch" not in blob["state"]:
                raise ValueError("no trainer state in it")
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint means: start again
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            warnings.warn(f"{path}: checkpoint discarded ({reason}); the trial restarts from scratch",
                          CheckpointDiscarded, stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        return blob["state"]

    def save_margins(self, arrays: dict[str, np.ndarray]) -> None:
        import io
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        _atomic_write(self.file("margins.npz"), buf.getvalue())

    def finish(self, result: dict) -> None:
        write_json(self.file("result.json"), result)
        _atomic_write(self.file("done"), b"")

    def fail(self, exc: BaseException) -> None:
        write_json(self.file("failed.json"), {"error": f"{type(exc).__name__}: {exc}",
                                              "traceback": "".join(traceback.format_exception(exc))})

    # ---- readers -----------------------------------------------------------------------------
    def config(self) -> dict:
        return json.loads(self.file("config.json").read_text())

    def result(self) -> dict:
        return json.loads(self.file("result.json").read_text())

    def metrics(self) -> list[dict]:
        return read_jsonl(self.file("metrics.jsonl"))

    def margins(self) -> dict[str, np.ndarray]:
        with np.load(self.file("margins.npz")) as z:
            return {k: z[k] for k in z.files}

    def failure(self) -> dict:
        return json.loads(self.file("failed.json").read_text())
