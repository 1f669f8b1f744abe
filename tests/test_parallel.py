"""Worker processes of ``--jobs`` end with the command that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SLEEPER = """
import os, time
from pathlib import Path

def sleep_long(folder, log):
    Path(folder, str(os.getpid())).touch()
    time.sleep(120)
    return {}
"""

PARENT = """
import sys
from sigma_pyro.experiments.parallel import run_all
from sleeper import sleep_long

calls = {n: (sleep_long, (sys.argv[1],), "") for n in range(2)}
run_all(calls, jobs=2, on_result=lambda key, result: None, log=print)
"""


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for whoever adopted it to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    started = tmp_path / "started"
    started.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PARENT), str(started)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(path.name) for path in started.iterdir()]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)  # no chance to shut its pool down
        parent.wait()
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in workers), "workers outlived their parent"
    finally:
        parent.kill()
        for pid in [int(path.name) for path in started.iterdir()]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
