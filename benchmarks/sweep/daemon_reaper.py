"""The Ray daemons a sweep starts on this machine die with its driver, even a driver killed with SIGKILL.

Ray's agents leave by themselves once their raylet is gone, but only after five missed checks and a log
flush to a GCS that is gone too: under load that takes longer than a user waits to rerun. A watcher started
before `ray.init` waits for the driver's end (its stdin closes, however the driver ends) and then kills every
process that carries the sweep's token in its environment: Ray's daemons, workers and whatever they started.

    python -m benchmarks.sweep.daemon_reaper TOKEN    # what `start` runs; not for users
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

TOKEN_VAR = "MOLERE_SWEEP_TOKEN"
_watcher: subprocess.Popen | None = None      # held: its stdin closes when the driver ends


def start() -> str:
    """Mark this process's environment with a fresh token (inherited by everything Ray starts from here)
    and start the watcher; returns the token."""
    global _watcher
    token = uuid.uuid4().hex
    os.environ[TOKEN_VAR] = token
    _watcher = subprocess.Popen([sys.executable, "-m", __name__, token], stdin=subprocess.PIPE,
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


def kill_marked(token: str, rounds: int = 50) -> int:
    """SIGKILL every marked process, again until none is left (a raylet may start workers meanwhile);
    returns how many kills were sent."""
    sent = 0
    for _ in range(rounds):
        pids = marked(token)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                sent += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.1)
    return sent


def main(token: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # a Ctrl-C is the driver's to handle; we clean up after
    sys.stdin.buffer.read()                         # returns at EOF: the driver has ended
    kill_marked(token)


if __name__ == "__main__":
    main(sys.argv[1])
