"""Typer command functions, one module per area; flows/cli.py registers them."""

import sys

from rich.console import Console


def make_console(stderr: bool = False) -> Console:
    """A console that never squeezes tables when output goes to a pipe or a file."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)
