"""Background processes (kiln/infra/daemon.py): started in their own group, found again by pid
file and marker, and stopped with everything in their group."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from kiln.infra import daemon


def _spawn_stubborn(tmp_path: Path) -> tuple[int, Path]:
    """A session leader that ignores SIGINT, with a child in its group."""
    script = "import signal, subprocess, sys, time\n"
    script += "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    script += "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    script += "time.sleep(60)\n"
    pid_file = tmp_path / "run" / "stubborn.pid"
    pid = daemon.spawn(
        [sys.executable, "-c", script, "kiln-test-marker"],
        env=dict(os.environ),
        log=tmp_path / "logs" / "stubborn.log",
        pid_file=pid_file,
    )
    return pid, pid_file


def _children(pid: int, timeout: float = 60) -> list[int]:
    """The leader's children, once it has started one (seconds on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if found:
            return [int(child) for child in found]
        time.sleep(0.1)
    raise AssertionError(f"the stand-in started no child within {timeout} s")


def test_a_process_group_that_ignores_sigint_is_killed(tmp_path):
    pid, pid_file = _spawn_stubborn(tmp_path)
    children = _children(pid)
    assert daemon.running(pid_file, "kiln-test-marker") == pid
    assert daemon.running(pid_file, "another-marker") is None  # a reused pid is not ours
    started = time.monotonic()
    assert daemon.stop_group(pid_file, "kiln-test-marker", [(signal.SIGINT, 1.0)]) is True
    assert time.monotonic() - started < 10
    assert daemon.exited(pid)
    deadline = time.monotonic() + 10
    while not all(daemon.exited(child) for child in children):  # the whole group goes
        assert time.monotonic() < deadline, "a child outlived its group's stop"
        time.sleep(0.1)
    assert not pid_file.exists()
    assert daemon.stop_group(pid_file, "kiln-test-marker", [(signal.SIGINT, 1.0)]) is False


def test_a_child_that_exited_is_reaped_and_reported_gone(tmp_path):
    pid = daemon.spawn([sys.executable, "-c", "pass"], env=dict(os.environ), log=tmp_path / "l")
    deadline = time.monotonic() + 60
    while not daemon.exited(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # reaped, not left a zombie: its pid (and process group) no longer exist
    assert not Path(f"/proc/{pid}").exists()
