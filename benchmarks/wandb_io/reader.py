"""Read an offline W&B run back from its `run-<id>.wandb` file (wandb 0.31 ships no reader).

The file is a block log: a 7-byte header (b":W&B", magic 0xBEE1, version), then 32 KiB blocks of
records, each with a 7-byte header (crc32, length, type) and a payload; a protobuf `Record` may be
split into FIRST / MIDDLE / LAST pieces across blocks.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | os.PathLike) -> Iterator:
    """Every protobuf Record of a .wandb file, in order (stops at a torn or zero-padded tail)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:HEADER])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B run file")
    pos, pieces = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:                      # block trailer too small for a header: skip to next block
            pos += room
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            break
        payload = data[pos + HEADER:pos + HEADER + length]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            break                              # torn write at the end of a killed run
        pos += HEADER + length
        pieces = payload if kind in (FULL, FIRST) else pieces + payload
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(pieces)
            yield rec


def _items(items, out: dict) -> dict:
    for it in items:
        if it.nested_key:                      # media, tables, histograms
            node = out
            for k in it.nested_key[:-1]:
                node = node.setdefault(k, {})
            node[it.nested_key[-1]] = json.loads(it.value_json)
        else:
            out[it.key] = json.loads(it.value_json)
    return out


def run_file(run_dir: str | os.PathLike) -> Path:
    found = sorted(Path(run_dir).glob("run-*.wandb"))
    if not found:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    return found[0]


def read_run(run_dir: str | os.PathLike) -> dict:
    """{"run": {id, project, name, group, job_type, tags}, "config" (nested keys kept), "history": [rows],
    "summary", "system": [system-metric samples], "artifacts": [{name, type, files}], "axes": {key: the key it
    is plotted against (define_metric)}}."""
    out: dict = {"run": None, "config": {}, "history": [], "summary": {}, "system": [], "artifacts": [], "axes": {}}
    for rec in records(run_file(run_dir)):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out["run"] = {"id": r.run_id, "project": r.project, "name": r.display_name, "group": r.run_group,
                          "job_type": r.job_type, "tags": list(r.tags)}
            _config(r.config.update, out["config"])
        elif kind == "config":
            _config(rec.config.update, out["config"])
        elif kind == "history":
            out["history"].append(_items(rec.history.item, {}))
        elif kind == "summary":
            _items(rec.summary.update, out["summary"])
        elif kind == "stats":
            out["system"].append({it.key: json.loads(it.value_json) for it in rec.stats.item})
        elif kind == "metric" and rec.metric.step_metric:
            out["axes"][rec.metric.name] = rec.metric.step_metric
        elif kind == "artifact":
            a = rec.artifact
            out["artifacts"].append({"name": a.name, "type": a.type, "files": [e.path for e in a.manifest.contents]})
    return out


def _config(items, out: dict) -> None:
    """Config updates; a nested key (["a", "b"]) sets out["a"]["b"]. wandb-internal ("_...") keys are skipped."""
    for it in items:
        path = list(it.nested_key) or [it.key]
        if not path[0] or path[0].startswith("_"):
            continue
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = json.loads(it.value_json)


def load_table(run_dir: str | os.PathLike, ref: dict) -> tuple[list, list]:
    """(columns, rows) of a logged wandb.Table, given its history/summary value."""
    t = json.loads((Path(run_dir) / "files" / ref["path"]).read_text())
    return t["columns"], t["data"]


def run_dirs(wandb_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """Run id -> every local run directory of that id under `wandb_dir` (the folder holding `wandb/`),
    oldest first: a retried or resumed trial has one per attempt."""
    runs: dict[str, list[Path]] = {}
    base = Path(wandb_dir) / "wandb"
    dirs = [d for d in list(base.glob("offline-run-*")) + list(base.glob("run-*")) if d.is_dir()]
    for d in sorted(dirs, key=lambda d: d.name.split("run-", 1)[1]):   # <timestamp>-<id>: chronological
        runs.setdefault(d.name.rsplit("-", 1)[-1], []).append(d)
    return runs


def find_runs(wandb_dir: str | os.PathLike) -> dict[str, Path]:
    """Run id -> newest local run directory under `wandb_dir` (the folder holding `wandb/`)."""
    return {rid: dirs[-1] for rid, dirs in run_dirs(wandb_dir).items()}


def read_attempts(dirs: list[Path]) -> dict:
    """One run read back from all its attempts (oldest first): configs and summaries merged, histories
    concatenated in order (what the W&B server shows once every attempt is synced)."""
    out: dict = {"run": None, "config": {}, "history": [], "summary": {}, "system": [], "artifacts": [], "axes": {}}
    for d in dirs:
        r = read_run(d)
        out["run"] = r["run"]
        for k in ("config", "summary", "axes"):
            out[k].update(r[k])
        for k in ("history", "system", "artifacts"):
            out[k] += r[k]
    return out


def last_step(wandb_dir: str | os.PathLike, run_id: str) -> int:
    """The largest history step of run `run_id` in its local run files under `wandb_dir` (-1: none)."""
    steps = [-1]
    for d in run_dirs(wandb_dir).get(run_id, []):
        try:
            steps += [r.get("_step", -1) for r in read_run(d)["history"]]
        except (OSError, ValueError):
            continue
    return int(max(steps))
