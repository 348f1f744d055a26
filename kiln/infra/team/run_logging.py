"""The workers' logging config: Prefect's own, plus kiln's loggers (`kiln`, `flows`) at INFO.

PREFECT_LOGGING_EXTRA_LOGGERS=kiln,flows hands kiln's records to the API, but leaves the
loggers' level to the root logger's (WARNING): retry warnings would reach a run's log in
the UI, a registry's "already holds this image" or a rollout's steps would not. Workers
started by `kiln up --team` point PREFECT_LOGGING_SETTINGS_PATH at this file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

KILN_LOGGERS = ("kiln", "flows")


def write_logging_config(path: Path) -> Path:
    """Write Prefect's default logging config with kiln's loggers added; return path."""
    from prefect.logging.configuration import DEFAULT_LOGGING_SETTINGS_PATH

    config = yaml.safe_load(DEFAULT_LOGGING_SETTINGS_PATH.read_text())
    loggers = config.setdefault("loggers", {})
    for name in KILN_LOGGERS:
        loggers[name] = {"level": "INFO", "handlers": ["api", "console"], "propagate": False}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
