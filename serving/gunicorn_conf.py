"""Gunicorn settings for the serving image, all from the environment.

Run:  gunicorn -c python:serving.gunicorn_conf
(the app, ``serving.app:create_app()``, is named here as ``wsgi_app``).

Start-up: before it forks any worker, the master verifies the model directory (files
present, JSON well formed, sha256 equal to MODEL_SHA256 and to metadata.json) and has a
short-lived child open the model in ONNX Runtime and warm it up. On any failure it logs
one line and exits with status 3; no worker starts, nothing ever answers readiness. The
master keeps the verified bytes, and every worker it forks serves them. A worker that
still fails to load (it should not) logs one line and is replaced a second later; the
other workers keep serving (serving/worker.py). If no worker serves and MAX_FAILED_BOOTS
boots fail in a row, the master logs one line and exits with status 3 (serving/boots.py)
instead of starting workers forever. A setting the server cannot use
(``MAX_ROWS=lots``) exits with status 2. Importing this module only reads the
environment: every check that can stop the server runs in ``on_starting``.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from gunicorn.errors import HaltServer

from serving.boots import BOOT_DIR, FailedBoots
from serving.config import ConfigError
from serving.logs import logging_config
from serving.runner import OWNED_MODEL_DIR, PRIVATE_DIR_PREFIX, remove_private_dir
from serving.server_settings import ServerSettings, server_settings

EXIT_MODEL_NOT_LOADED = 3  # gunicorn's own WORKER_BOOT_ERROR: the same status either way
EXIT_BAD_SETTING = 2


def load_settings(environ: Mapping[str, str]) -> tuple[ServerSettings, str | None]:
    """The settings, or the defaults and the error (reported by ``on_starting``, which stops
    the master before it binds): importing this module never exits."""
    try:
        return server_settings(environ), None
    except ConfigError as err:
        return ServerSettings(), str(err)


_settings, _bad_setting = load_settings(os.environ)

bind = list(_settings.bind)
workers = _settings.workers
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
backlog = _settings.backlog
loglevel = _settings.log_level
wsgi_app = "serving.app:create_app()"
worker_class = "serving.worker.KilnWorker"
proc_name = "kiln"
accesslog = "-" if _settings.access_log else None
errorlog = "-"
logconfig_dict = logging_config(loglevel, _settings.log_format, _settings.access_log)
control_socket_disable = True  # gunicorn >= 24's control socket: not used by kiln
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Metrics across workers: prometheus_client reads PROMETHEUS_MULTIPROC_DIR when it is
# first imported, so the master sets it (on_starting) before any worker imports the app,
# and nothing it imports earlier loads prometheus_client (serving/refusals.py).
_OWNED = "KILN_OWN_METRICS_DIR"
_failed_boots: FailedBoots | None = None  # the master's, made in on_starting
# Temp folders a master makes carry its pid, so a later master can tell a killed one's.
_TEMP_PREFIXES = ("kiln-metrics-", "kiln-boots-", PRIVATE_DIR_PREFIX)


def _own_temp_dir(prefix: str) -> Path:
    """A new private temp folder named after this master: ``<prefix><pid>-<random>``."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def remove_dead_masters_dirs(tmp: Path | None = None) -> list[Path]:
    """Remove the temp folders of masters that died without cleaning up (SIGKILL, OOM):
    only this user's, and only those whose master pid no longer runs."""
    removed = []
    root = Path(tmp or tempfile.gettempdir())
    uid = os.getuid()
    for prefix in _TEMP_PREFIXES:
        for path in root.glob(f"{prefix}*"):
            pid = path.name[len(prefix) :].split("-", 1)[0]
            try:
                info = path.lstat()
            except OSError:
                continue
            if not pid.isdigit() or info.st_uid != uid or not stat.S_ISDIR(info.st_mode):
                continue  # someone else's, a symlink, or not named by kiln
            if int(pid) == os.getpid() or _alive(int(pid)):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _make_metrics_dir() -> Path:
    """The workers' metrics directory, made (and owned) here unless one is given; emptied."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_own_temp_dir("kiln-metrics-"))
        os.environ[_OWNED] = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    _multiprocess_values_now()
    return metrics_dir


def _multiprocess_values_now() -> None:
    """If prometheus_client was imported before the variable was set (a worker class of
    one's own that imports it), it counts in memory and every scrape is empty: pick its
    multiprocess values now, while no metric exists yet (the apps make them, in workers)."""
    values = sys.modules.get("prometheus_client.values")
    if values is not None and hasattr(values, "get_value_class"):
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def _remove_own_dirs() -> None:
    """Remove the metrics directory this config made, and a model directory handed over
    with ``KILN_OWNED_MODEL_DIR`` (`kiln serve`'s private copy)."""
    owned = os.environ.get(_OWNED)
    if owned and owned == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(owned, ignore_errors=True)
    model_dir = os.environ.get(OWNED_MODEL_DIR)
    if model_dir:
        remove_private_dir(Path(model_dir))
    if _failed_boots is not None:
        shutil.rmtree(_failed_boots.directory, ignore_errors=True)


def on_starting(server) -> None:
    """Master, once: check the settings, fresh metrics files, then verify the model and
    keep it before forking workers."""
    if _bad_setting is not None:
        _stop(server, EXIT_BAD_SETTING, "bad server setting, not serving: %s", _bad_setting)
    for leftover in remove_dead_masters_dirs():
        server.log.info("removed %s, left by a server that was killed", leftover)
    _make_metrics_dir()

    from serving.artifacts import ModelLoadError, keep_verified, read_artifacts
    from serving.config import ServingConfig

    try:
        config = ServingConfig.from_env(os.environ)
    except ConfigError as err:
        _stop(server, EXIT_BAD_SETTING, "bad server setting, not serving: %s", err)
    try:
        artifacts = read_artifacts(config)
        _check_loads(artifacts, while_waiting=preload_web_modules)
    except ModelLoadError as err:
        _stop(server, EXIT_MODEL_NOT_LOADED, "model not loaded, not serving: %s", err)
    keep_verified(config, artifacts)  # the workers, restarted ones too, serve these bytes
    global _failed_boots
    _failed_boots = FailedBoots(_own_temp_dir("kiln-boots-"), _settings.max_failed_boots)
    os.environ[BOOT_DIR] = str(_failed_boots.directory)  # the workers mark their start there
    server.log.info(
        "model %s verified: version %s, sha256 %s; starting %d worker(s)",
        artifacts.model_path,
        artifacts.version,
        artifacts.sha256,
        server.cfg.workers,
    )


def _stop(server, status: int, message: str, reason: object) -> NoReturn:
    """One log line, then exit before binding or forking, leaving nothing behind."""
    server.log.error(message, reason)
    _remove_own_dirs()
    sys.exit(status)


# The web framework's modules: pure Python, no threads (numpy and ONNX Runtime each start
# one when imported, so they stay out of the master). Imported by the master while the load
# check runs in its child, on another core, the workers it forks find them loaded: these
# imports were a third of a worker's boot (docs/benchmarks.md).
WEB_MODULES = (
    "pydantic",
    "pydantic.v1",
    "starlette.exceptions",
    "fastapi",
    "fastapi.exceptions",
    "fastapi.responses",
    "fastapi.routing",
    "serving.schemas",
)


def preload_web_modules() -> None:
    """Import WEB_MODULES now; one that fails is left for the worker to import (and report)."""
    import importlib

    for name in WEB_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # the worker imports it again and reports the error in its log
            return


def _check_loads(artifacts, while_waiting=None) -> None:
    """Open and warm up the model in a short-lived child, before any worker is forked.

    A model ONNX Runtime refuses is then caught here, once: with several workers failing
    at once gunicorn itself crashes (a traceback, status 1). The check runs in a forked
    child so the master never imports ONNX Runtime (or starts its threads) and forks its
    workers from a clean, single-threaded process. `while_waiting` runs in the master
    while the child works.
    """
    from serving.artifacts import ModelLoadError

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: load, report, leave without running any exit handler
        os.close(read_end)
        status = 0
        try:
            from serving.model import Model

            Model(artifacts, intra_op_threads=1, inter_op_threads=1)
        except BaseException as err:  # everything is reported, in one line
            status = EXIT_MODEL_NOT_LOADED
            message = (
                str(err)
                if isinstance(err, ModelLoadError)
                else (f"model {artifacts.model_path} failed to load: {type(err).__name__}: {err}")
            )
            os.write(write_end, message.encode("utf-8", "replace")[:60000])
        os._exit(status)
    os.close(write_end)
    if while_waiting is not None:
        while_waiting()
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode("utf-8", "replace")
    _, wait_status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(wait_status) != 0:
        raise ModelLoadError(
            message or f"model {artifacts.model_path}: the load check died ({wait_status})"
        )


def post_worker_init(worker) -> None:
    """Worker: access log only when asked; exit if the master dies.

    Uvicorn workers do not notice a master killed with SIGKILL, and would keep serving
    (and holding the port) as orphans. Uvicorn calls ``callback_notify`` every TIMEOUT
    seconds; there the worker compares its parent with the master it started under and,
    if the master is gone, stops gracefully.
    """
    config = getattr(worker, "config", None)
    if config is None:
        return
    config.access_log = _settings.access_log
    notify = config.callback_notify
    master = worker.ppid

    async def notify_or_leave() -> None:
        if os.getppid() != master:
            worker.log.warning("master %s is gone; worker %s stops", master, os.getpid())
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if notify is not None:
            await notify()

    config.callback_notify = notify_or_leave


def post_fork(server, worker) -> None:
    """Worker, once forked: with --reuse-port gunicorn binds each worker's own sockets, and
    on a port shared with another version (the local target's switch, one worker per
    server) the oldest server takes every new connection (serving/reuseport.py), and
    hands them over to the next one when it stops (serving/worker.py)."""
    if not server.cfg.reuse_port or server.cfg.workers != 1:
        return  # several workers: each has its own socket, and the hash must spread them
    from serving.reuseport import oldest_takes_all

    steered = getattr(worker, "steered_sockets", [])  # KilnWorker hands them over at exit
    for listener in worker.sockets:
        if oldest_takes_all(listener.sock):
            steered.append(listener.sock)
        else:
            server.log.warning(
                "%s: the kernel refused the reuseport program; new connections on a shared "
                "port are spread over its servers",
                listener,
            )


def on_exit(server) -> None:
    """Master, at the end: remove the directories this server owns."""
    _remove_own_dirs()


def child_exit(server, worker) -> None:
    """Master: drop a dead worker's live gauges from the multiprocess metrics; give up when
    no worker serves and the last MAX_FAILED_BOOTS boots all failed."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    if _failed_boots is None or not server.LISTENERS:  # stopping: exits are expected
        return
    if _failed_boots.worker_exited(worker.pid, list(server.WORKERS)):
        reason = (
            f"no worker could start: {_failed_boots.in_a_row} boots failed in a row and none "
            "serves (see the workers' errors above); not serving"
        )
        server.log.error(reason)
        raise HaltServer(reason, EXIT_MODEL_NOT_LOADED)
