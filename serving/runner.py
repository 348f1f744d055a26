"""Run gunicorn with serving/gunicorn_conf.py on a model directory.

``server_command`` builds the command and environment (a plain function, so
``kiln serve`` and the tests can use it); ``exec_server`` replaces the current
process with gunicorn, so signals reach gunicorn's master directly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


def server_command(
    model_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The gunicorn argv and environment that serve the model in ``model_dir``."""
    model_dir = Path(model_dir).resolve()
    env = dict(os.environ if environ is None else environ)
    env["MODEL_FILEPATH"] = str(model_dir / "model.onnx")
    env["LABEL_FILEPATH"] = str(model_dir / "labels.json")
    env["METADATA_FILEPATH"] = str(model_dir / "metadata.json")
    env["BIND"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if workers is not None:
        env["WORKERS"] = str(workers)
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:serving.gunicorn_conf"]
    return argv, env


def exec_server(model_dir: Path, **options) -> None:
    """Replace this process with gunicorn serving ``model_dir``; never returns."""
    argv, env = server_command(model_dir, **options)
    os.execvpe(argv[0], argv, env)
