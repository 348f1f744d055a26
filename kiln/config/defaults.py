"""Defaults the `kiln` command needs before it loads pydantic (kiln/cli/launch.py)."""

from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/kiln")
