"""Typer command functions, one module per area; kiln/cli/app.py registers them."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console

_debug = False


def set_debug(value: bool) -> None:
    global _debug
    _debug = value


def debug_enabled() -> bool:
    return _debug


def debug_from_environment() -> bool:
    """KILN_DEBUG, read leniently: it must work even when other settings are invalid."""
    return os.environ.get("KILN_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


def make_console(stderr: bool = False) -> Console:
    """A console that never squeezes tables when output goes to a pipe or a file."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def print_json(data: Any) -> None:
    """Machine-readable output (`-o json`): one JSON document on stdout, never wrapped."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def print_line(text: str) -> None:
    """Copyable text (an id, a digest, a command): written as is, never wrapped or cut."""
    sys.stdout.write(text + "\n")
