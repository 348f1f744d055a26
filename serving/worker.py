"""The gunicorn worker class: uvicorn's, with kiln's bounded HTTP protocol, and a model
load failure that costs only this worker.

``uvicorn_worker.UvicornWorker`` hands uvicorn gunicorn's keep-alive, timeout, backlog
and max_requests, nothing else; gunicorn's request limits do not reach it. This class
puts serving/protocol.py's ``KilnHttpProtocol`` (bounded request line, head, header
count, body, time and connections; HTTP/1.1 only, so no websocket protocol is loaded)
in uvicorn's place, raises the worker's open-file
limit to its hard limit so connections are refused by kiln's cap and not by the kernel,
and changes one exit: a worker whose app fails to start (the model does not load) exits
with ``EXIT_WORKER_NOT_READY`` after ``RESTART_DELAY`` seconds, so gunicorn starts
another one. uvicorn_worker exits with gunicorn's WORKER_BOOT_ERROR (3) there, which
makes gunicorn stop every worker, the healthy ones too. A worker whose app has started
says so (serving/boots.py), so the master can tell a bad worker beside healthy ones
(replaced, forever) from a server where no worker can start (it gives up).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
import time
from collections.abc import Mapping
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from serving import boots, reuseport
from serving.config import ConfigError
from serving.protocol import protocol_class
from serving.server_settings import ConnectionLimits, connection_limits

EXIT_WORKER_NOT_READY = 5  # neither 3 (WORKER_BOOT_ERROR) nor 4 (APP_LOAD_ERROR): both halt
RESTART_DELAY = 1.0  # seconds: a worker that cannot load is not restarted in a tight loop
_FILES_RESERVED = 64  # descriptors kept for the listening socket, logs, the model, metrics
_DRAIN_POLL = 0.01  # seconds between looks at a handed-over socket's queue


class KilnWorker(UvicornWorker):
    """A uvicorn worker with bounded connections (see serving/protocol.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = worker_limits(os.environ, raise_file_limit())
        self.config.http = protocol_class(limits)
        self.config.ws = "none"  # HTTP only: the protocol ignores upgrades (serving/protocol.py)
        # Sockets whose port's new connections this server keeps (gunicorn_conf.post_fork)
        self.steered_sockets: list[Any] = []

    async def _serve(self) -> None:
        # uvicorn_worker's own _serve, with a mark once the app has started
        self.config.app = self.wsgi
        server = Server(config=self.config)
        startup = server.startup

        async def startup_and_mark(sockets: Any = None) -> None:
            await startup(sockets=sockets)
            if server.started:
                boots.mark_started(os.environ, os.getpid())

        shutdown = server.shutdown

        async def hand_over_then_shutdown(sockets: Any = None) -> None:
            await hand_over(self.steered_sockets)
            await shutdown(sockets=sockets)

        server.startup = startup_and_mark  # type: ignore[method-assign]
        server.shutdown = hand_over_then_shutdown  # type: ignore[method-assign]
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def run(self) -> None:
        try:
            super().run()
        except SystemExit as exit:
            if exit.code != Arbiter.WORKER_BOOT_ERROR:
                raise
            self.log.error(
                "worker %s did not start (its app failed to load); gunicorn starts another",
                os.getpid(),
            )
            time.sleep(RESTART_DELAY)
            sys.exit(EXIT_WORKER_NOT_READY)


async def hand_over(sockets: list[Any]) -> None:
    """Before the listening sockets close: send the shared port's new connections to the
    next server there, and keep accepting until what was queued here has been taken.
    Closing a socket resets the connections still queued on it (serving/reuseport.py)."""
    handed = [sock for sock in sockets if reuseport.hand_over(sock)]
    if not handed:
        return
    loop = asyncio.get_running_loop()
    drain = reuseport.Drain(handed, loop.time())
    while not drain.settled(loop.time()):
        await asyncio.sleep(_DRAIN_POLL)  # the event loop accepts meanwhile


def worker_limits(environ: Mapping[str, str], open_files: int) -> ConnectionLimits:
    """The environment's limits, with connections capped below the open-file limit."""
    try:
        limits = connection_limits(environ)
    except ConfigError:  # the master has checked these already; be safe all the same
        limits = ConnectionLimits()
    cap = max(1, open_files - _FILES_RESERVED)
    if limits.max_connections > cap:
        limits = ConnectionLimits(**{**limits.__dict__, "max_connections": cap})
    return limits


def raise_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; return the new soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
