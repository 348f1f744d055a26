"""Gunicorn's settings for the server, from the environment: one pure function.

``server_settings(environ)`` reads a plain mapping and returns a frozen value, or
raises ConfigError naming the variable; serving/gunicorn_conf.py turns the value into
gunicorn's module-level settings. Every name is documented in README.md ("Serving").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from serving.config import ConfigError, env_bool, env_choice, env_int

LOG_LEVELS = {"debug", "info", "warning", "error", "critical"}
LOG_FORMATS = {"text", "json"}

__all__ = ["ConfigError", "ServerSettings", "cpu_count", "server_settings"]


@dataclass(frozen=True)
class ServerSettings:
    """What the gunicorn master needs to know before it binds and forks."""

    bind: tuple[str, ...] = ("0.0.0.0:8000",)
    workers: int = 1
    timeout: int = 30
    graceful_timeout: int = 10
    keepalive: int = 5
    backlog: int = 2048
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = False


def cpu_count() -> int:
    """CPUs this process may use (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _bind(environ: Mapping[str, str]) -> tuple[str, ...]:
    if environ.get("BIND"):
        parts = tuple(part.strip() for part in environ["BIND"].split(",") if part.strip())
        if not parts:
            raise ConfigError(f"BIND={environ['BIND']!r} names no address")
        return parts
    return (f"{environ.get('HOST') or '0.0.0.0'}:{environ.get('PORT') or '8000'}",)


def server_settings(environ: Mapping[str, str], cpus: int | None = None) -> ServerSettings:
    """The settings ``environ`` asks for; ConfigError names the first bad variable."""
    default_workers = env_int(environ, "WEB_CONCURRENCY", cpus or cpu_count(), 1)
    return ServerSettings(
        bind=_bind(environ),
        workers=env_int(environ, "WORKERS", default_workers, 1),
        timeout=env_int(environ, "TIMEOUT", 30, 1),
        graceful_timeout=env_int(environ, "GRACEFUL_TIMEOUT", 10, 0),
        keepalive=env_int(environ, "KEEPALIVE", 5, 0),
        backlog=env_int(environ, "BACKLOG", 2048, 1),
        log_level=env_choice(environ, "LOG_LEVEL", "info", LOG_LEVELS),
        log_format=env_choice(environ, "LOG_FORMAT", "text", LOG_FORMATS),
        access_log=env_bool(environ, "ACCESS_LOG", False),
    )
