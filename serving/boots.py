"""How many worker boots failed in a row, so a server no worker can start gives up.

A worker that cannot load its model exits and gunicorn starts another (serving/worker.py),
so one bad worker never takes healthy ones down. If *no* worker can start, that would
go on forever. Each worker that has started marks itself here (a file named after its
pid, in a directory the master owns); the master, told a worker exited, decides:

- the worker had started: an ordinary exit (killed, timed out), nothing counted;
- it had not, but another live worker has: a bad worker beside a healthy one, which
  keeps serving; the count starts again;
- it had not, and no live worker has: one more failure in a row; at ``limit`` the
  server stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path

BOOT_DIR = "KILN_BOOT_DIR"  # where started workers leave their mark


def mark_started(environ: Mapping[str, str], pid: int) -> None:
    """Worker: record that this worker's app has started (no-op outside kiln's master)."""
    directory = environ.get(BOOT_DIR)
    if directory:
        with contextlib.suppress(OSError):
            (Path(directory) / str(pid)).touch()


class FailedBoots:
    """The master's count of worker boots that failed with no worker serving."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.in_a_row = 0

    def _started(self, pid: int) -> bool:
        return (self.directory / str(pid)).exists()

    def worker_exited(self, pid: int, live: Iterable[int]) -> bool:
        """Count worker ``pid``'s exit; True when the server should give up."""
        started = self._started(pid)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / str(pid)).unlink()
        if started:
            return False
        if any(self._started(other) for other in live):
            self.in_a_row = 0
            return False
        self.in_a_row += 1
        return self.in_a_row >= self.limit
