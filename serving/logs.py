"""Log configuration for the server: plain text or one JSON object per line.

Configured once, at the entry point (serving/gunicorn_conf.py hands ``logging_config``
to gunicorn, which applies it in the master and every worker). Nothing logs per
request on the hot path unless access logs are switched on (``ACCESS_LOG=1``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

# LogRecord attributes that are not "extra" fields passed by the caller.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, pid, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(
    level: str = "info", fmt: str = "text", access_log: bool = False
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict for the server, gunicorn and uvicorn loggers.

    Without access logs the access loggers get no handler and do not propagate:
    uvicorn checks ``hasHandlers()`` once per connection and then skips the per-request
    log call entirely.
    """
    access_handlers = ["kiln_access"] if access_log else []
    level = level.upper()
    formatter: dict[str, Any] = (
        {"()": "serving.logs.JsonFormatter"}
        if fmt == "json"
        else {"format": TEXT_FORMAT, "class": "logging.Formatter"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "kiln", "stream": "ext://sys.stderr"}
    access = {"class": "logging.StreamHandler", "formatter": "kiln", "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"kiln": formatter},
        "handlers": {"kiln": handler, "kiln_access": access},
        "root": {"level": level, "handlers": ["kiln"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["kiln"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": access_handlers, "propagate": False},
            "uvicorn.error": {"level": level, "handlers": ["kiln"], "propagate": False},
            "uvicorn.access": {"level": "INFO", "handlers": access_handlers, "propagate": False},
        },
    }
