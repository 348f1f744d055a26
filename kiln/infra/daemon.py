"""Background processes kiln starts (Prefect servers, SeaweedFS, the team's PostgreSQL and
workers): each in its own session (process group), a pid file to find it again from another
`kiln` call, its output appended to a log file."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from kiln.config.errors import KilnError


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    pid_file: Path | None = None,
    cwd: Path | None = None,
) -> int:
    """Start argv as a session leader that outlives this process; return its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    old_cwd = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)  # posix_spawn has no cwd argument before Python 3.13
        pid = os.posix_spawn(
            argv[0],
            list(argv),
            dict(env),
            setsid=True,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
        )
    finally:
        os.chdir(old_cwd)
        os.close(log_fd)
    if pid_file is not None:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(str(pid))
    return pid


def running(pid_file: Path, marker: str) -> int | None:
    """The pid in pid_file when that process still runs a command containing marker.

    The marker guards against a pid reused by an unrelated process after a reboot.
    """
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if exited(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return pid if marker in cmdline else None


def exited(pid: int) -> bool:
    try:
        # Our own child: waitpid knows, and reaps it (a zombie left unreaped keeps its
        # process group alive for good).
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        pass  # started by an earlier `kiln` process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie of another parent counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def wait_exit(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if exited(pid):
            return True
        time.sleep(0.1)
    return exited(pid)


def stop_group(pid_file: Path, marker: str, steps: Sequence[tuple[signal.Signals, float]]) -> bool:
    """Signal the process group of pid_file's process, each (signal, seconds to wait for
    the leader to exit) in turn, then SIGKILL the group. False when none of ours ran."""
    pid = running(pid_file, marker)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    stop_pgid(pid, steps)
    return True


def stop_pgid(pid: int, steps: Sequence[tuple[signal.Signals, float]]) -> None:
    """Signal the group led by pid, each (signal, seconds to wait for the leader) in turn,
    then SIGKILL what is left of the group."""
    for sig, grace in steps:
        _signal_group(pid, sig)
        if wait_exit(pid, grace):
            break
    # whatever the leader left behind in its group goes too
    _signal_group(pid, signal.SIGKILL)
    wait_exit(pid, 5)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as err:
        raise KilnError(f"cannot signal process group {pgid}: {err}") from err


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
