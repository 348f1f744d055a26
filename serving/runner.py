"""Run gunicorn with serving/gunicorn_conf.py on a model directory.

``server_command`` builds the command and environment (a plain function, so
``kiln serve`` and the tests can use it); ``exec_server`` replaces the current
process with gunicorn, so signals reach gunicorn's master directly.

``private_model_dir`` makes a directory only this server uses (0700; ``exec_server(...,
owned=True)`` seals its files read-only, 0400, and hands it to the gunicorn master,
which removes it when it exits).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

OWNED_MODEL_DIR = "KILN_OWNED_MODEL_DIR"  # a model directory the master removes at exit


def server_command(
    model_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int | None = None,
    environ: Mapping[str, str] | None = None,
    owned: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """The gunicorn argv and environment that serve the model in ``model_dir``
    (``owned``: the master removes the directory when it exits)."""
    model_dir = Path(model_dir).resolve()
    env = dict(os.environ if environ is None else environ)
    env.pop(OWNED_MODEL_DIR, None)
    if owned:
        env[OWNED_MODEL_DIR] = str(model_dir)
    env["MODEL_FILEPATH"] = str(model_dir / "model.onnx")
    env["LABEL_FILEPATH"] = str(model_dir / "labels.json")
    env["METADATA_FILEPATH"] = str(model_dir / "metadata.json")
    env["BIND"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if workers is not None:
        env["WORKERS"] = str(workers)
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:serving.gunicorn_conf"]
    return argv, env


def exec_server(model_dir: Path, **options) -> None:
    """Replace this process with gunicorn serving ``model_dir``; never returns.

    With ``owned=True`` the model's files are made read-only (0400) first."""
    if options.get("owned"):
        seal_model_dir(Path(model_dir))
    argv, env = server_command(model_dir, **options)
    os.execvpe(argv[0], argv, env)


PRIVATE_DIR_PREFIX = "kiln-serve-"


def private_model_dir(label: str = "") -> Path:
    """A new directory only this user can enter (0700), for one server's model copy, named
    ``kiln-serve-<pid>-<label>...``: `exec_server` keeps the pid, so the gunicorn master is
    that process, and a later master removes the folder if this one was killed."""
    return Path(tempfile.mkdtemp(prefix=f"{PRIVATE_DIR_PREFIX}{os.getpid()}-{label}"))


def seal_model_dir(model_dir: Path) -> None:
    """Make the model's files read-only for their owner alone (0400), the folder 0700."""
    for path in model_dir.iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(stat.S_IRUSR)
    model_dir.chmod(stat.S_IRWXU)


def remove_private_dir(model_dir: Path) -> None:
    """Remove a private model directory (its read-only files included)."""
    shutil.rmtree(model_dir, ignore_errors=True)
