"""Gunicorn's settings from the environment: the pure function, and a side-effect-free import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.gunicorn_conf import load_settings
from serving.server_settings import ConfigError, ServerSettings, server_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults():
    settings = server_settings({}, cpus=3)
    assert settings == ServerSettings(workers=3)
    assert settings.bind == ("0.0.0.0:8000",)
    assert (settings.timeout, settings.graceful_timeout, settings.keepalive) == (30, 10, 5)
    assert (settings.log_level, settings.log_format, settings.access_log) == (
        "info",
        "text",
        False,
    )


def test_every_variable_is_read():
    settings = server_settings(
        {
            "BIND": "127.0.0.1:9000, [::1]:9001",
            "WORKERS": "4",
            "TIMEOUT": "7",
            "GRACEFUL_TIMEOUT": "0",
            "KEEPALIVE": "2",
            "BACKLOG": "16",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            "ACCESS_LOG": "yes",
        },
        cpus=1,
    )
    assert settings.bind == ("127.0.0.1:9000", "[::1]:9001")
    assert (settings.workers, settings.timeout, settings.graceful_timeout) == (4, 7, 0)
    assert (settings.keepalive, settings.backlog) == (2, 16)
    assert (settings.log_level, settings.log_format, settings.access_log) == (
        "warning",
        "json",
        True,
    )


def test_host_and_port_and_web_concurrency():
    settings = server_settings({"HOST": "127.0.0.1", "PORT": "81", "WEB_CONCURRENCY": "5"})
    assert (settings.bind, settings.workers) == (("127.0.0.1:81",), 5)
    assert server_settings({"WEB_CONCURRENCY": "5", "WORKERS": "2"}).workers == 2


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WORKERS": "0"}, "WORKERS=0 is below the minimum 1"),
        ({"WORKERS": "many"}, "WORKERS='many' is not an integer"),
        ({"WEB_CONCURRENCY": "x"}, "WEB_CONCURRENCY='x' is not an integer"),
        ({"TIMEOUT": "0"}, "TIMEOUT=0 is below the minimum 1"),
        ({"KEEPALIVE": "-1"}, "KEEPALIVE=-1 is below the minimum 0"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' is not one of"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is not one of"),
        ({"ACCESS_LOG": "maybe"}, "ACCESS_LOG='maybe' is not a boolean"),
        ({"BIND": " , "}, "BIND=' , ' names no address"),
    ],
)
def test_bad_settings_are_named(environ, message):
    with pytest.raises(ConfigError, match=message):
        server_settings(environ, cpus=1)


def test_load_settings_keeps_the_error_for_on_starting():
    settings, error = load_settings({"LOG_FORMAT": "xml"})
    assert settings == ServerSettings()
    assert error is not None and error.startswith("LOG_FORMAT='xml'")
    assert load_settings({"WORKERS": "2"}) == (server_settings({"WORKERS": "2"}), None)


def test_importing_the_config_neither_exits_nor_writes(tmp_path):
    """gunicorn imports the config module (and again on reload): only hooks act."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"TMPDIR": str(scratch), "LOG_FORMAT": "xml", "PYTHONPATH": str(REPO)})
    code = (
        "import os, serving.gunicorn_conf as c\n"
        "print(c._bad_setting)\n"
        "print(os.environ.get('PROMETHEUS_MULTIPROC_DIR'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "LOG_FORMAT='xml' is not one of ['json', 'text']",
        "None",
    ]
    assert list(scratch.iterdir()) == []


def test_connection_limits_defaults_and_overrides():
    from serving.server_settings import ConnectionLimits, connection_limits

    assert connection_limits({}) == ConnectionLimits()
    assert server_settings({}, cpus=1).limits == ConnectionLimits()
    limits = connection_limits(
        {
            "MAX_REQUEST_LINE": "1000",
            "MAX_HEADERS": "10",
            "MAX_HEADER_BYTES": "2000",
            "MAX_BODY_BYTES": "4096",
            "HEADER_TIMEOUT": "0.5",
            "BODY_TIMEOUT": "2.5",
            "MAX_CONNECTIONS": "7",
        }
    )
    assert limits == ConnectionLimits(1000, 10, 2000, 4096, 0.5, 2.5, 7)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MAX_HEADERS": "0"}, "MAX_HEADERS=0 is below the minimum 1"),
        ({"MAX_HEADER_BYTES": "10"}, "MAX_HEADER_BYTES=10 is below the minimum 256"),
        ({"HEADER_TIMEOUT": "never"}, "HEADER_TIMEOUT='never' is not a number"),
        ({"BODY_TIMEOUT": "0"}, "BODY_TIMEOUT=0.0 is below the minimum 0.1"),
        ({"MAX_CONNECTIONS": "0"}, "MAX_CONNECTIONS=0 is below the minimum 1"),
        (
            {"MAX_REQUEST_LINE": "9000", "MAX_HEADER_BYTES": "4096"},
            "MAX_REQUEST_LINE=9000 is above MAX_HEADER_BYTES=4096",
        ),
    ],
)
def test_bad_connection_limits_are_named(environ, message):
    with pytest.raises(ConfigError, match=message):
        server_settings(environ, cpus=1)


def test_a_worker_caps_connections_below_its_open_file_limit():
    from serving.worker import worker_limits

    assert worker_limits({}, open_files=100_000).max_connections == 2048
    assert worker_limits({}, open_files=1024).max_connections == 1024 - 64
    assert worker_limits({"MAX_CONNECTIONS": "10"}, open_files=1024).max_connections == 10
