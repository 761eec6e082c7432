"""The result store, the source of truth of every run: one directory per trial, written atomically.
Its files, when a trial counts as done, and the statuses: docs/design/store.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.atomic import atomic_write


FINISHED = ("done", "diverged")   # sealed outcomes: a sweep never reruns them
CHECKPOINT_FORMAT = "molere-bench-checkpoint/1"
# Types beyond torch's weights_only defaults that a checkpoint may hold: none (trainer states are
# tensors, containers and Python scalars only), so `torch.load(weights_only=True)` never runs a global.
CHECKPOINT_SAFE_GLOBALS: list = []


class CheckpointDiscarded(UserWarning):
    """A checkpoint that is corrupt, foreign (another trial or format) or unsafe was deleted."""


def write_json(path: Path, obj: Any) -> None:
    atomic_write(Path(path), (json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n").encode())


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


RECORDED = ("config.json", "metrics.jsonl", "margins.npz")   # the outputs listed in result.json
SYNC_INTERVAL_S = 5.0   # metrics.jsonl is fsync'ed at most this often (a short trial's epochs cost no fsync each)


def _fsync_path(path: Path) -> None:
    if path.exists():
        with open(path, "rb+") as f:
            os.fsync(f.fileno())


def epoch_disorder(rows: list[dict]) -> str | None:
    """Why the epoch rows of metrics.jsonl are not 1, 2, ..., E once each (two runs wrote them?), or None."""
    epochs = [r.get("epoch") for r in rows]
    if epochs == list(range(1, len(epochs) + 1)):
        return None
    shown = ", ".join(map(str, epochs[:12])) + (", …" if len(epochs) > 12 else "")
    return f"metrics.jsonl has epoch rows [{shown}], not 1..{len(epochs)} once each in order"


def fingerprint(path: Path) -> dict:
    """Size and sha256 of a file (what completion records and verification compares)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"size": Path(path).stat().st_size, "sha256": h.hexdigest()}


def _reference_changed(erm_path: Path, ref: dict) -> str | None:
    """Why the reference files a trial used (result.json's `reference`) differ now, if they do (a file
    that is not there or not done any more is no reason: the trial's own outputs still hold)."""
    files = ref.get("files") or {"margins.npz": ref["margins_sha256"]}
    for rel, sha in files.items():
        run = RunDir((erm_path / rel).parent)
        if run.file("done").exists() and run.problem() is None and fingerprint(erm_path / rel)["sha256"] != sha:
            return f"its ERM reference {ref['trial_id']} has other margins than the ones it used ({rel})"
    return None


class RunDir:
    """One trial's directory in the store."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._synced = -float("inf")     # when metrics.jsonl was last fsync'ed by this object

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def status(self) -> str:
        if self.file("done").exists() and self.problem() is None:
            return "diverged" if self.result().get("status") == "diverged" else "done"
        if self.file("failed.json").exists():
            return "failed"
        return "incomplete" if self.file("config.json").exists() or self.file("done").exists() else "absent"

    def problem(self) -> str | None:
        """Why this trial's completed outputs cannot be trusted, or None (also None when not completed)."""
        if not self.file("done").exists():
            return None
        if not self.file("result.json").exists():
            return "result.json is missing"
        try:
            seal = json.loads(self.file("done").read_text() or "null")
            if not isinstance(seal, dict) or fingerprint(self.file("result.json")) != seal.get("result.json"):
                return "result.json differs from the one recorded at completion (or no record)"
            result, config = self.result(), self.config()
            if result.get("trial_id") != config.get("trial_id"):
                return "result.json does not match config.json's trial id"
            for name, seen in (result.get("files") or {}).items():
                if not self.file(name).exists():
                    return f"{name} is missing"
                if fingerprint(self.file(name)) != seen:
                    return f"{name} changed since completion (size or sha256 differs)"
            if set(RECORDED) - set(result.get("files") or {}):
                return "result.json lists no outputs"
            disorder = epoch_disorder(self.metrics())
            if disorder:
                return disorder
            ref = result.get("reference")
            if ref:
                why = _reference_changed(self.path.parent / ref["trial_id"], ref)
                if why:
                    return why
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"unreadable outputs ({type(exc).__name__}: {str(exc)[:80]})"
        return None

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
        atomic_write(self.file("metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in kept).encode())
        if state is None:
            self.file("checkpoint.pt").unlink(missing_ok=True)
        return state

    def append_metrics(self, row: dict) -> None:
        """Append one row (flushed to the OS at once; fsync'ed when SYNC_INTERVAL_S has passed)."""
        with open(self.file("metrics.jsonl"), "a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
            f.flush()
            if time.monotonic() - self._synced >= SYNC_INTERVAL_S:
                os.fsync(f.fileno())
                self._synced = time.monotonic()

    def save_checkpoint(self, state: dict, trial_id: str | None = None) -> None:
        """Write a trainer state atomically (a crash mid-write leaves the previous checkpoint)."""
        import torch
        _fsync_path(self.file("metrics.jsonl"))    # never a checkpoint ahead of the metrics it resumes with
        atomic_write(self.file("checkpoint.pt"),
                      lambda f: torch.save({"format": CHECKPOINT_FORMAT, "trial_id": trial_id, "state": state}, f))

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
        atomic_write(self.file("margins.npz"), buf.getvalue())

    def finish(self, result: dict) -> None:
        """Record the outputs (size, sha256) in result.json, then seal result.json in `done`."""
        _fsync_path(self.file("metrics.jsonl"))
        files = {n: fingerprint(self.file(n)) for n in RECORDED if self.file(n).exists()}
        write_json(self.file("result.json"), {**result, "files": files})
        atomic_write(self.file("done"), json.dumps({"result.json": fingerprint(self.file("result.json"))}).encode())

    def fail(self, exc: BaseException) -> None:
        write_json(self.file("failed.json"), {"error": f"{type(exc).__name__}: {exc}",
                                              "traceback": "".join(traceback.format_exception(exc))})

    def fail_with(self, error: str, **details) -> None:
        """Record a failure seen from outside the trial (time limit, worker death)."""
        self.file("done").unlink(missing_ok=True)
        write_json(self.file("failed.json"), {"error": error, "traceback": "", **details})

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
