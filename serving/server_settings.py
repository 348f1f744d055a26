"""Gunicorn's settings for the server, from the environment: one pure function.

``server_settings(environ)`` reads a plain mapping and returns a frozen value, or
raises ConfigError naming the variable; serving/gunicorn_conf.py turns the value into
gunicorn's module-level settings. Every name is documented in README.md ("Serving").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from serving.config import (
    DEFAULT_MAX_BODY_BYTES,
    ConfigError,
    env_bool,
    env_choice,
    env_float,
    env_int,
)

LOG_LEVELS = {"debug", "info", "warning", "error", "critical"}
LOG_FORMATS = {"text", "json"}

__all__ = ["ConfigError", "ConnectionLimits", "ServerSettings", "cpu_count", "server_settings"]


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may cost a worker (enforced by serving/protocol.py).

    Gunicorn's own limit_request_line, limit_request_fields, limit_request_field_size and
    worker_connections do not reach uvicorn workers (uvicorn_worker passes only keep-alive,
    timeout, max_requests, backlog and forwarded IPs), and uvicorn's httptools protocol has
    no header limit at all: kiln enforces these itself."""

    max_request_line: int = 8190
    max_headers: int = 100
    max_header_bytes: int = 16384
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 2048


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
    max_failed_boots: int = 5  # worker boots in a row with no worker serving (serving/boots.py)
    limits: ConnectionLimits = ConnectionLimits()


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
        max_failed_boots=env_int(environ, "MAX_FAILED_BOOTS", 5, 1),
        limits=connection_limits(environ),
    )


def connection_limits(environ: Mapping[str, str]) -> ConnectionLimits:
    """The per-connection limits ``environ`` asks for; ConfigError names a bad one."""
    default = ConnectionLimits()
    limits = ConnectionLimits(
        max_request_line=env_int(environ, "MAX_REQUEST_LINE", default.max_request_line, 64),
        max_headers=env_int(environ, "MAX_HEADERS", default.max_headers, 1),
        max_header_bytes=env_int(environ, "MAX_HEADER_BYTES", default.max_header_bytes, 256),
        max_body_bytes=env_int(environ, "MAX_BODY_BYTES", default.max_body_bytes, 64),
        header_timeout=env_float(environ, "HEADER_TIMEOUT", default.header_timeout, 0.1),
        body_timeout=env_float(environ, "BODY_TIMEOUT", default.body_timeout, 0.1),
        max_connections=env_int(environ, "MAX_CONNECTIONS", default.max_connections, 1),
    )
    if limits.max_request_line > limits.max_header_bytes:
        raise ConfigError(
            f"MAX_REQUEST_LINE={limits.max_request_line} is above "
            f"MAX_HEADER_BYTES={limits.max_header_bytes} (the whole request head)"
        )
    return limits
