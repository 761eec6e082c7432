"""The Ray daemons a sweep starts on this machine die with its driver, even a driver killed with SIGKILL.

Ray's agents leave by themselves once their raylet is gone, but only after missed checks and a log flush to a
GCS that is gone too: under load that takes longer than a user waits to rerun. A watcher started before
`ray.init` follows the driver's process tree while the driver lives (orphans move to PID 1, so the tree must
be known before), and when the driver ends (its stdin closes, however the driver ends) kills every process it
saw there, whatever those started since, and every process whose environment still carries the sweep's token.
The token alone is not enough: Ray renames its agents (`setproctitle`), which overwrites the start of their
environment block, the token included, depending on the lengths of their command line and environment.

    python -m benchmarks.sweep.daemon_reaper TOKEN DRIVER_PID    # what `start` runs; not for users
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from benchmarks.sweep.proctree import kill_all

TOKEN_VAR = "MOLERE_SWEEP_TOKEN"
FOLLOW_S = 1.0          # how often the driver's tree is looked at
_watcher: subprocess.Popen | None = None      # held: its stdin closes when the driver ends


def start() -> str:
    """Mark this process's environment with a fresh token (inherited by everything Ray starts from here)
    and start the watcher; returns the token."""
    global _watcher
    token = uuid.uuid4().hex
    os.environ[TOKEN_VAR] = token
    _watcher = subprocess.Popen([sys.executable, "-m", __name__, token, str(os.getpid())], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return token


def marked(token: str) -> list[int]:
    """Pids of the processes (other than this one) whose environment carries `token`."""
    needle, pids = f"{TOKEN_VAR}={token}".encode(), []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def follow(driver: int, seen: dict[int, psutil.Process]) -> None:
    """Add the driver's current descendants to `seen` (a pid's Process remembers its start time, so a pid
    reused later by another program is never mistaken for it)."""
    with contextlib.suppress(psutil.Error):
        for p in psutil.Process(driver).children(recursive=True):
            if p.pid != os.getpid():
                seen.setdefault(p.pid, p)


def _alive(procs) -> list[psutil.Process]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def kill_left(token: str, seen: dict[int, psutil.Process], rounds: int = 20) -> int:
    """Kill what `seen` holds, what it started since and every marked process, again until none is left
    (a raylet may start workers meanwhile); returns how many processes were killed."""
    killed = 0
    for _ in range(rounds):
        procs = _alive(seen.values())
        for pid in marked(token):
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
        procs = _alive(procs)
        if not procs:
            break
        killed += kill_all(procs)
    return killed


def main(token: str, driver: int | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # a Ctrl-C is the driver's to handle; we clean up after
    seen: dict[int, psutil.Process] = {}
    fd = sys.stdin.fileno()
    while True:
        if driver is not None:
            follow(driver, seen)
        if select.select([fd], [], [], FOLLOW_S)[0] and not os.read(fd, 65536):
            break                                   # end of file: the driver has ended
    kill_left(token, seen)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
