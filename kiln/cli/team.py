"""What `kiln up --team` and `kiln down` do for the team's parts: one line per part on
stderr, `export` lines on stdout (`eval "$(kiln up --team)"`)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping

from kiln.cli.output import make_console
from kiln.config.settings import KilnSettings
from kiln.infra.engine import run_infra
from kiln.infra.team.config import TeamConfig
from kiln.infra.team.up import team_down, team_up

err_console = make_console(stderr=True)


def parse_exports(text: str) -> dict[str, str]:
    """`export KEY=VALUE` lines (scripts/infra.sh env) as a mapping."""
    found = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            found[key] = value
    return found


def export_lines(exports: Mapping[str, str]) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in exports.items())


def up_team(settings: KilnSettings) -> None:
    """The registry and engine (scripts/infra.sh), then every part of the team setup."""
    config = TeamConfig.from_settings(settings)  # validate first
    machine = run_infra("up").stdout
    sys.stdout.write(machine)
    result = team_up(config, parse_exports(machine))
    for part, detail in result.parts:
        err_console.print(f"{part:<14} {detail}", highlight=False, soft_wrap=True)
    sys.stdout.write(export_lines(result.exports))
    sys.stdout.flush()


def down_team(settings: KilnSettings) -> None:
    """Stop the team's parts, when any run; their data stays for the next `up --team`."""
    config = TeamConfig.from_settings(settings)
    for name in team_down(config):
        err_console.print(f"stopped {name}", highlight=False)
