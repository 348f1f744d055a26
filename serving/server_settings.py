"""Gunicorn's settings for the server, from the environment: one pure function.

``server_settings(environ)`` reads a plain mapping and returns a frozen value, or
raises ConfigError naming the variable; serving/gunicorn_conf.py turns the value into
gunicorn's module-level settings. Every name is documented in the configuration reference
(docs/reference/settings.md), generated from the fields' metadata.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from serving.config import (
    DEFAULT_MAX_BODY_BYTES,
    ConfigError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    setting,
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

    max_request_line: int = setting(
        "MAX_REQUEST_LINE", "Bytes in the request target (414 above).", 8190
    )
    max_headers: int = setting("MAX_HEADERS", "Headers per request (431 above).", 100)
    max_header_bytes: int = setting(
        "MAX_HEADER_BYTES",
        "Bytes in the whole request head, the request line included (431 above).",
        16384,
    )
    max_body_bytes: int = setting(
        "MAX_BODY_BYTES", "Bytes in a request body (413 above).", DEFAULT_MAX_BODY_BYTES
    )
    header_timeout: float = setting(
        "HEADER_TIMEOUT",
        "Seconds for a request head to arrive, from the connection's opening or its first "
        "byte (408; a connection that sent nothing is closed).",
        10.0,
    )
    body_timeout: float = setting(
        "BODY_TIMEOUT", "Seconds for a body to arrive once its head has (408).", 30.0
    )
    max_connections: int = setting(
        "MAX_CONNECTIONS",
        "Open connections per worker, capped below the worker's open-file limit (which the "
        "worker raises to its hard limit). At the cap the oldest connection with no request "
        "in flight is closed for the newcomer.",
        2048,
    )


@dataclass(frozen=True)
class ServerSettings:
    """What the gunicorn master needs to know before it binds and forks."""

    bind: tuple[str, ...] = setting(
        "BIND",
        "Listen addresses, comma-separated (or `HOST` and `PORT`).",
        ("0.0.0.0:8000",),
        shown="`0.0.0.0:8000`",
    )
    workers: int = setting(
        "WORKERS",
        "Gunicorn workers (or `WEB_CONCURRENCY`).",
        1,
        shown="the CPUs this process may use",
    )
    timeout: int = setting(
        "TIMEOUT", "Gunicorn's worker heartbeat: a worker stuck this long is replaced.", 30
    )
    graceful_timeout: int = setting(
        "GRACEFUL_TIMEOUT", "Seconds a stopping worker has to finish its requests.", 10
    )
    keepalive: int = setting("KEEPALIVE", "Seconds a keep-alive connection may stay idle.", 5)
    backlog: int = setting("BACKLOG", "The listen backlog.", 2048)
    log_level: str = setting(
        "LOG_LEVEL", "`debug`, `info`, `warning`, `error` or `critical`.", "info"
    )
    log_format: str = setting(
        "LOG_FORMAT",
        "`text`, or `json`: one JSON object per line (`time`, `level`, `logger`, `pid`, "
        "`message`).",
        "text",
    )
    access_log: bool = setting(
        "ACCESS_LOG",
        "`1` logs every request; it costs throughput, and when it is off uvicorn skips the "
        "log call entirely.",
        False,
    )
    max_failed_boots: int = setting(
        "MAX_FAILED_BOOTS",
        "Worker boots that may fail in a row while no worker serves; then the server logs "
        "one line and exits with status 3. A worker that fails beside a healthy one is "
        "replaced a second later, forever (serving/boots.py).",
        5,
    )
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)


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
    default = ServerSettings()
    default_workers = env_int(environ, "WEB_CONCURRENCY", cpus or cpu_count(), 1)
    return ServerSettings(
        bind=_bind(environ),
        workers=env_int(environ, "WORKERS", default_workers, 1),
        timeout=env_int(environ, "TIMEOUT", default.timeout, 1),
        graceful_timeout=env_int(environ, "GRACEFUL_TIMEOUT", default.graceful_timeout, 0),
        keepalive=env_int(environ, "KEEPALIVE", default.keepalive, 0),
        backlog=env_int(environ, "BACKLOG", default.backlog, 1),
        log_level=env_choice(environ, "LOG_LEVEL", default.log_level, LOG_LEVELS),
        log_format=env_choice(environ, "LOG_FORMAT", default.log_format, LOG_FORMATS),
        access_log=env_bool(environ, "ACCESS_LOG", default.access_log),
        max_failed_boots=env_int(environ, "MAX_FAILED_BOOTS", default.max_failed_boots, 1),
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
