"""A trial's process tree: held together by a leader, locked, killed whole, never outliving its worker (Linux).

The leader forks the trial and is the tree's child subreaper, so whatever the trial starts (`setsid`,
double forks) stays beneath it instead of moving to PID 1. It holds the trial's lock, and kills the rest
of the tree when the trial ends or when the worker that started it is gone (Ray ends a sweep's workers
when its driver dies). The chain and its guarantees: docs/sweeps.md, "Failures".
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import fcntl
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import psutil

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36     # linux/prctl.h
POLL_S = 0.25            # how often a leader looks at its trial and its worker
LOCK_FILE = ".lock"


def prctl(option: int, value: int) -> bool:
    """prctl(2) on Linux; False elsewhere or when refused."""
    if not sys.platform.startswith("linux"):
        return False
    return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0


def _gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_all(roots: list[psutil.Process], timeout: float = 5.0) -> int:
    """SIGKILL the processes `roots` and every descendant. Each is stopped before its children are listed,
    so none can start another meanwhile; returns how many were killed."""
    found: dict[int, psutil.Process] = {}
    todo = list(roots)
    while todo:
        p = todo.pop()
        if p.pid in found or p.pid == os.getpid():
            continue
        found[p.pid] = p
        with contextlib.suppress(psutil.Error):
            p.suspend()
        with contextlib.suppress(psutil.Error):
            todo.extend(p.children())
    for p in found.values():
        with contextlib.suppress(psutil.Error):
            p.kill()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(_gone(p) for p in found.values()):
        time.sleep(0.02)
    return len(found)


def kill_tree(root: int, include_root: bool = True, timeout: float = 5.0) -> int:
    """SIGKILL process `root` (or only its descendants) and every descendant (`kill_all`)."""
    try:
        top = psutil.Process(root)
        roots = [top] if include_root else top.children()
    except psutil.NoSuchProcess:
        return 0
    return kill_all(roots, timeout)


class TrialLock:
    """An exclusive lock on a trial's directory. Its holder forks the trial, which inherits it, so the lock
    lasts as long as any process of that run; a second run of the trial waits for it."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / LOCK_FILE
        self.file = None

    def acquire(self, on_wait: Callable[[str], None] | None = None) -> None:
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            if on_wait is not None:
                on_wait(self.file.read().strip() or "another process")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n")
        self.file.flush()


def _watch(child: int, worker: psutil.Process) -> int | None:
    """Reap the leader's children (adopted orphans too) until `child` ends: its exit code (negative: the
    signal that killed it); None as soon as the worker that started the leader is gone."""
    parent = os.getppid()
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                break
            if pid == child:
                return os.waitstatus_to_exitcode(status)
        if os.getppid() != parent or _gone(worker):
            return None
        time.sleep(POLL_S)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def lead(trial: Callable[[], int], worker_pid: int) -> int | None:
    """Run `trial()` (its exit code) in a forked child and return how that child ended (as `_watch`); the rest
    of the tree is killed either way. Call it in a fresh single-threaded process: it becomes a subreaper."""
    worker = psutil.Process(worker_pid)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    leader = os.getpid()
    child = os.fork()
    if child == 0:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)      # a leader killed from outside takes its trial along
        code = 1
        try:
            if os.getppid() == leader:
                code = trial()
        except BaseException:  # noqa: BLE001 - the exit code says it; the trial logs its own errors
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    ended = _watch(child, worker)
    kill_tree(leader, include_root=False)
    _reap()
    return ended


def exit_as(code: int | None) -> None:
    """End this process the way a child ended (`lead`'s result): the same exit code or the same signal."""
    if code is not None and code < 0:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(-code, signal.SIG_DFL)         # refused for SIGKILL, which needs no reset
        with contextlib.suppress(OSError, ValueError):
            os.kill(os.getpid(), -code)
            time.sleep(1)
    os._exit(1 if code is None else (code if code >= 0 else 128 - code))
