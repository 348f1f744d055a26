"""Locks that keep deploys, builds and prunes on one store from interleaving.

One small interface, `Locks.hold(key, purpose)`, a context manager: the second run waits,
says once what it waits for, and fails with one line (`LockTimeout`) after a bounded wait.
`FileLocks` implements it on one machine with flock(2): the kernel drops a lock when its
process dies, so a killed run never leaves the store locked. A team setup implements the
same interface with a Prefect global concurrency limit named by the key.

One key per store (`store_key`): prunes read every target's deployment record of a store,
so a deploy to any target of that store and a prune must not overlap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from kiln.config.errors import KilnError
from kiln.config.names import DEFAULT_NAME

log = logging.getLogger(__name__)

DEFAULT_WAIT = 600.0  # seconds a run waits for another before it gives up

_HELD = threading.local()  # lock files this thread holds, whichever FileLocks took them


class LockTimeout(KilnError):
    """Another run held the lock for longer than this run would wait."""


class Locks(Protocol):
    def hold(self, key: str, purpose: str) -> contextlib.AbstractContextManager[None]:
        """Hold `key` for the block; wait for another holder, within a bound."""
        ...


def store_key(store_url: str, name: str = DEFAULT_NAME) -> str:
    """The lock key of one model name in one artifact store: readable, and unique per store
    URL and name. Builds and deploys of one name take turns; two names never wait on each
    other; a prune holds every name's key."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", store_url).strip("-")[-40:]
    digest = hashlib.sha256(store_url.encode()).hexdigest()[:12]
    own = "" if name == DEFAULT_NAME else f"-{name}"  # the default keeps the key it had
    return f"store-{readable}-{digest}{own}"


class FileLocks:
    """flock(2) on `<directory>/<key>.lock`; the file says who holds it, for the message."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        wait: float = DEFAULT_WAIT,
        poll: float = 0.1,
        notify: Callable[[str], Any] = log.warning,
    ) -> None:
        self.directory = Path(directory)
        self.wait = wait
        self.poll = poll
        self.notify = notify

    def __repr__(self) -> str:
        return f"FileLocks({str(self.directory)!r})"

    @contextlib.contextmanager
    def hold(self, key: str, purpose: str) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key}.lock"
        held: set[str] = _HELD.__dict__.setdefault("paths", set())
        if str(path) in held:  # the same thread again (a build inside a held deploy): re-enter
            yield
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
        try:
            self._acquire(fd, path, key, purpose)
            held.add(str(path))
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, _holder(purpose).encode(), 0)
                yield
            finally:
                held.discard(str(path))
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _acquire(self, fd: int, path: Path, key: str, purpose: str) -> None:
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            holder = _read_holder(path)
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"{purpose}: gave up after {self.wait:.0f} s waiting for another kiln run "
                    f"({holder}) on {key}; try again when it has finished"
                )
            if not told:
                self.notify(f"{purpose}: waiting for another kiln run ({holder}) to finish")
                told = True
            time.sleep(self.poll)


def _holder(purpose: str) -> str:
    since = datetime.now(UTC).strftime("%H:%M:%S UTC")
    return f"{purpose}, pid {os.getpid()} on {socket.gethostname()} since {since}"


def _read_holder(path: Path) -> str:
    try:
        return path.read_text()[:200].strip() or "holder unknown"
    except OSError:
        return "holder unknown"


def machine_lock_dir() -> Path:
    """Where locks shared by every kiln process on this machine live (the local target's
    port locks too): the temp dir, which every user and state dir has in common."""
    return Path(tempfile.gettempdir()) / "kiln-locks"


def store_locks(store: Any, *, wait: float = DEFAULT_WAIT) -> FileLocks:
    """The file locks for a store: beside a local store (every user of the folder shares
    them), else machine-wide (a team setup passes its own Locks).

    A remote store's lock is keyed by its URL and kept in the machine's temp dir, not in a
    KILN_STATE_DIR: two runs that reach one store but have different state dirs must still
    wait for each other, and a library function reads no settings (kiln/wiring.py does).
    """
    if getattr(store, "_local", False):
        return FileLocks(Path(store.root) / "locks", wait=wait)
    return FileLocks(machine_lock_dir(), wait=wait)
