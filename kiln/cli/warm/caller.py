"""The caller's side of the warm runner: standard library only, since the `kiln` command
loads it before anything heavy is imported. It hands its terminal, arguments, environment and
working folder to the runner, after checking that the runner is the caller's own user."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

from kiln.cli.warm import READ_TIMEOUT, source_dir

FIRST_REPLY = 30.0  # seconds a caller waits for the runner to take its command


def run_there(args: Sequence[str], path: Path) -> int | None:
    """Run `kiln ARGS` in the warm runner at `path`; its exit status, or None when no
    runner takes it (none answers, or it refused): the caller then runs it itself."""
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(READ_TIMEOUT)
        conn.connect(str(path))
    except OSError:
        return None
    with conn:
        try:
            cwd = os.getcwd()
        except OSError:  # a folder removed under the caller: let it find out itself
            return None
        if not _same_user(conn):  # the environment carries secrets: only to our own user
            return None
        request = {
            "argv": list(args),
            "env": dict(os.environ),
            "cwd": cwd,
            "python": sys.executable,
            "source": source_dir(),
        }
        payload = json.dumps(request).encode()
        try:
            socket.send_fds(conn, [struct.pack("!I", len(payload))], [0, 1, 2])
            conn.sendall(payload)
            conn.settimeout(FIRST_REPLY)
            first = _read_reply(conn)
        except (OSError, ValueError):
            return None
        if "refused" in first:
            sys.stderr.write(f"kiln: {first['refused']}: running here instead\n")
            return None
        return _wait_for_status(conn, int(first["pid"]))


def _same_user(conn: socket.socket) -> bool:
    """Whether the process listening on the socket runs as this process's user (SO_PEERCRED:
    the kernel's word, not the socket file's owner, which anyone could have created)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    if uid != os.geteuid():
        sys.stderr.write(f"kiln: the warm runner's socket is served by uid {uid}: running here\n")
        return False
    return True


def _wait_for_status(conn: socket.socket, pid: int) -> int:
    """Forward Ctrl-C and termination to the child; return its exit status."""

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    conn.settimeout(None)  # a run takes as long as it takes; the runner answers at its end
    try:
        return int(_read_reply(conn)["status"])
    except (OSError, ValueError, KeyError):
        sys.stderr.write("kiln: the warm runner went away before the command ended\n")
        return 1


def _read_reply(conn: socket.socket) -> dict:
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise ValueError("connection closed")
        line += chunk
        if len(line) > 4096:
            raise ValueError("reply too long")
    return json.loads(line)
