"""The watcher that takes a sweep's local Ray daemons down with its driver."""
import os
import subprocess
import sys
import time

import psutil

from benchmarks.sweep import daemon_reaper


def _sleeper(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env)


def test_a_driver_that_dies_takes_the_marked_processes_along_and_no_other():
    token = "t" + os.urandom(8).hex()
    marked = _sleeper(dict(os.environ, **{daemon_reaper.TOKEN_VAR: token}))
    other = _sleeper(dict(os.environ, **{daemon_reaper.TOKEN_VAR: "someone-else"}))
    watcher = subprocess.Popen([sys.executable, "-m", "benchmarks.sweep.daemon_reaper", token],
                               stdin=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(0.5)
        assert marked.poll() is None                 # nothing happens while the driver lives
        watcher.stdin.close()                        # how a SIGKILLed driver looks to the watcher
        assert watcher.wait(timeout=60) == 0
        assert marked.wait(timeout=10) == -9 and other.poll() is None
    finally:
        for p in (marked, other, watcher):
            p.kill()
            p.wait()


DRIVER = """
import subprocess, sys, time
from benchmarks.sweep import daemon_reaper
daemon_reaper.start()
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
kid = subprocess.Popen(sleeper, env={})      # no token: as an agent whose title overwrote its environment
print(kid.pid, flush=True)
time.sleep(600)
"""


def test_a_killed_driver_takes_its_tree_along_even_without_the_token():
    other = _sleeper(dict(os.environ))
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        kid = int(driver.stdout.readline())
        time.sleep(3 * daemon_reaper.FOLLOW_S)       # the watcher has seen the driver's tree
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(kid):
            time.sleep(0.1)
        assert not _alive(kid) and other.poll() is None
    finally:
        for p in (other, driver):
            p.kill()
            p.wait()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
