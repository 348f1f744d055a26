"""`python -m serving`'s command line, and the log formats."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from serving.logs import JsonFormatter, logging_config
from serving.runner import server_command

REPO = Path(__file__).resolve().parents[2]


def test_server_command_points_gunicorn_at_the_model_dir(tmp_path):
    argv, env = server_command(tmp_path, host="127.0.0.1", port=18001, workers=3, environ={})
    assert argv[1:] == ["-m", "gunicorn", "-c", "python:serving.gunicorn_conf"]
    assert env["MODEL_FILEPATH"] == str(tmp_path.resolve() / "model.onnx")
    assert env["LABEL_FILEPATH"] == str(tmp_path.resolve() / "labels.json")
    assert env["METADATA_FILEPATH"] == str(tmp_path.resolve() / "metadata.json")
    assert (env["BIND"], env["WORKERS"]) == ("127.0.0.1:18001", "3")


def test_server_command_keeps_the_environment_and_brackets_ipv6(tmp_path):
    _, env = server_command(tmp_path, host="::1", port=8000, environ={"LOG_FORMAT": "json"})
    assert env["BIND"] == "[::1]:8000"
    assert env["LOG_FORMAT"] == "json"
    assert "WORKERS" not in env  # gunicorn_conf's default: the CPU count


def test_main_refuses_zero_workers(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "serving", "--model-dir", str(tmp_path), "--workers", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 2
    assert "--workers must be at least 1" in out.stderr


def test_json_formatter_writes_one_object_per_line():
    record = logging.makeLogRecord(
        {"name": "serving.app", "levelname": "ERROR", "levelno": 40, "msg": "a %s", "args": ("b",)}
    )
    record.model_version = "v1"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "a b"
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "serving.app"
    assert entry["model_version"] == "v1"
    assert entry["time"].endswith("Z")


@pytest.mark.parametrize("access", [False, True])
def test_access_loggers_have_handlers_only_when_asked(access):
    config = logging_config("info", "json", access_log=access)
    for name in ("uvicorn.access", "gunicorn.access"):
        assert bool(config["loggers"][name]["handlers"]) is access
        assert config["loggers"][name]["propagate"] is False
    assert config["formatters"]["kiln"] == {"()": "serving.logs.JsonFormatter"}
