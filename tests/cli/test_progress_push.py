"""Push bytes on the status line: an engine push stream, as the docker SDK decodes it, fed
through the engine builder's stream check into the CLI's progress handler."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from kiln.cli.progress import progress
from kiln.images.builders.engine import check_stream
from kiln.images.push_progress import PushMeter, human_bytes

# What an engine sends for a push of two layers (one already in the registry).
PUSH_STREAM = [
    {"status": "The push refers to repository [127.0.0.1:5000/kiln/iris]"},
    {"status": "Preparing", "progressDetail": {}, "id": "aaa"},
    {"status": "Preparing", "progressDetail": {}, "id": "bbb"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "bbb"},
    {"status": "Pushing", "progressDetail": {"current": 512_000, "total": 3_000_000}, "id": "aaa"},
    {
        "status": "Pushing",
        "progressDetail": {"current": 1_536_000, "total": 3_000_000},
        "id": "aaa",
    },
    {
        "status": "Pushing",
        "progressDetail": {"current": 3_000_000, "total": 3_000_000},
        "id": "aaa",
    },
    {"status": "Pushed", "progressDetail": {}, "id": "aaa"},
    {"status": "v1: digest: sha256:" + "0" * 64 + " size: 741"},
]


def test_the_meter_sums_layers_and_reports_at_most_every_interval(caplog) -> None:
    now = [0.0]
    meter = PushMeter("kiln/iris:v1", every=0.3, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="kiln.images.push_progress"):
        for chunk in PUSH_STREAM:
            meter.update(chunk)
            now[0] += 0.2
        meter.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "pushing kiln/iris:v1: 0 B"  # the first layer known, nothing sent yet
    assert "pushing kiln/iris:v1: 1.5 MB of 3.0 MB" in lines
    assert lines[-1] == "pushing kiln/iris:v1: 3.0 MB"
    assert len(lines) < len(PUSH_STREAM)  # throttled
    assert (meter.sent, meter.total) == (3_000_000, 3_000_000)


def test_push_bytes_reach_the_status_line_on_a_terminal_only() -> None:
    for terminal in (True, False):
        out = io.StringIO()
        console = Console(file=out, force_terminal=terminal, width=120)
        meter = PushMeter("kiln/iris:v1", every=0.0)
        with progress(console, "building", level=logging.DEBUG) as handler:
            check_stream("pushing kiln/iris:v1", PUSH_STREAM, on_chunk=meter.update)
            meter.finish()
            shown = handler.__rich__().plain
        assert "pushing kiln/iris:v1: 3.0 MB" in shown
        assert (out.getvalue() != "") is terminal  # piped output stays quiet


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 999, 1000, 2_345_678, 7 * 10**9)] == [
        "0 B",
        "999 B",
        "1.0 KB",
        "2.3 MB",
        "7.0 GB",
    ]
