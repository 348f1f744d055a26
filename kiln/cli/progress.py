"""Progress for long steps: one live status line fed by kiln's and Prefect's log records.

Library code only logs (logging.getLogger(__name__)); this handler turns those records into
a rich status line that names the step, its elapsed time and its latest message. Inside a
Prefect flow run the step is the task that logs. When stderr is not a terminal it stays
quiet and only remembers which step failed, for the run's summary line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.text import Text

# Loggers whose records describe progress: kiln's library and Prefect's run loggers.
WATCHED = ("kiln", "flows", "prefect.flow_runs", "prefect.task_runs")


class StepProgress(logging.Handler):
    def __init__(self, console: Console, title: str, live: bool) -> None:
        super().__init__()
        self.console = console
        self.live = live
        self.step = title
        self.detail = ""
        self.started = time.monotonic()
        self.failed_step: str | None = None
        self.flow_run_id: str | None = None

    def __rich__(self) -> Text:  # re-rendered on every refresh: the elapsed time ticks
        elapsed = time.monotonic() - self.started
        line = f"{self.step} {elapsed:4.0f}s  {self.detail}"
        return Text(line[: max(20, self.console.width - 4)], no_wrap=True, overflow="ellipsis")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._note(record)
        except Exception:  # progress must never break the work it reports on
            self.handleError(record)

    def _note(self, record: logging.LogRecord) -> None:
        message = " ".join(record.getMessage().split())
        self.flow_run_id = self.flow_run_id or getattr(record, "flow_run_id", None)
        run_name = getattr(record, "task_run_name", None)
        step = current_task_name() or (_task_name(run_name) if run_name else None)
        if step:
            if record.levelno >= logging.ERROR or message.startswith("Finished in state Failed"):
                self.failed_step = step
            if step != self.step:
                self._finish_step()
                self.step, self.started, self.detail = step, time.monotonic(), ""
        if not message.startswith("Finished in state"):  # the step line says as much
            self.detail = message
        if record.levelno >= logging.WARNING and record.name.startswith(("kiln", "flows")):
            self.console.print(f"warning: {message}", highlight=False, markup=False)

    def _finish_step(self) -> None:
        if self.live and self.step:
            elapsed = time.monotonic() - self.started
            self.console.print(f"  {self.step} {elapsed:.1f}s", highlight=False, markup=False)


def current_task_name() -> str | None:
    """The Prefect task that runs in this thread, if any (without importing Prefect)."""
    import sys

    context = sys.modules.get("prefect.context")
    if context is None:
        return None
    run = context.TaskRunContext.get()
    return run.task.name if run is not None else None


def _task_name(run_name: str) -> str:
    # Task run names are "<task name>-<3 random characters>".
    head, _, tail = run_name.rpartition("-")
    return head if head and len(tail) == 3 else run_name


@contextmanager
def progress(console: Console, title: str, *, level: int = logging.INFO) -> Iterator[StepProgress]:
    """Watch kiln's and Prefect's loggers while the block runs; a status line on a terminal."""
    live = console.is_terminal
    handler = StepProgress(console, title, live)
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in WATCHED]
    before: list[Any] = [(lg, lg.level, lg.propagate) for lg in loggers]
    loggers[0].propagate = False  # kiln's warnings are shown once, by the handler
    for lg in loggers:
        lg.addHandler(handler)
        # kiln's own loggers at `level` (DEBUG streams engine build lines); Prefect's at INFO
        wanted = level if lg is loggers[0] else logging.INFO
        if lg.getEffectiveLevel() > wanted:
            lg.setLevel(wanted)
    try:
        if live:
            with console.status(handler):
                yield handler
            handler._finish_step()
        else:
            yield handler
    finally:
        for lg, old, propagate in before:
            lg.removeHandler(handler)
            lg.setLevel(old)
            lg.propagate = propagate
