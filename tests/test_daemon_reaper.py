"""The watcher that takes a sweep's local Ray daemons down with its driver."""
import os
import subprocess
import sys
import time

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
