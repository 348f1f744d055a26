"""Bytes a push has sent so far, as log lines the CLI's status line shows.

An engine push reports, per layer, `{"id": ..., "progressDetail": {"current", "total"}}`
in its stream; the layer builder sends whole blobs. Either way the numbers become a log
DEBUG record ("pushing NAME: 12.0 MB of 150.3 MB"), at most one every `every` seconds, so the
status line of `kiln run` and `kiln build` (kiln/cli/progress.py) follows the upload
on a terminal and nothing is printed when output is not one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

DONE = ("Pushed", "Layer already exists", "Mounted from")


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{count} B"  # pragma: no cover


class PushMeter:
    """Sums what each layer of one push has sent; logs the total now and then."""

    def __init__(
        self, what: str, *, every: float = 0.5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what
        self.every = every
        self.clock = clock
        self.layers: dict[str, tuple[int, int]] = {}  # id -> (sent, total)
        self.last: float | None = None

    @property
    def sent(self) -> int:
        return sum(sent for sent, _ in self.layers.values())

    @property
    def total(self) -> int:
        return sum(total for _, total in self.layers.values())

    def update(self, chunk: Mapping[str, Any]) -> None:
        """One chunk of an engine push stream (other chunks are ignored)."""
        layer = chunk.get("id")
        if not layer:
            return
        detail = chunk.get("progressDetail") or {}
        sent, total = self.layers.get(str(layer), (0, 0))
        if "current" in detail:
            sent = int(detail["current"])
            total = max(int(detail.get("total") or 0), total, sent)
        elif str(chunk.get("status", "")).startswith(DONE):
            sent = total
        else:
            return
        self.layers[str(layer)] = (sent, total)
        self._report()

    def add(self, name: str, size: int) -> None:
        """A whole blob sent (the layer builder's uploads)."""
        self.layers[name] = (size, size)
        self._report()

    def _report(self, force: bool = False) -> None:
        now = self.clock()
        if not force and self.last is not None and now - self.last < self.every:
            return
        self.last = now
        total = f" of {human_bytes(self.total)}" if self.total > self.sent else ""
        log.debug("pushing %s: %s%s", self.what, human_bytes(self.sent), total)

    def finish(self) -> None:
        """The last figure, whatever the throttle says (nothing when nothing was sent)."""
        if self.layers:
            self._report(force=True)
