"""The runner's side of the warm runner: a daemon that has imported what runs need, forks a
child per caller, and runs the entry point `kiln up` named in it (`kiln.cli.app:main`).

Started as `python -m kiln.cli.warm.runner SOCKET ENTRY`; it never imports the CLI itself, so
the CLI may start and stop it without an import cycle."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from kiln.cli.warm import MAX_REQUEST, READ_TIMEOUT, socket_path, source_dir

log = logging.getLogger(__name__)

# What a run imports besides the entry point's own module (which imports Prefect, typer and
# pydantic): what a run imports later, inside functions (a `kiln run` imported 200 more).
ENTRY = "kiln.cli.app:main"  # what `kiln up` has each child run: the `kiln` command itself
PRELOAD = (
    "flows.pipeline",
    "docker",
    "fastapi",
    "prefect.concurrency.sync",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.utilities.visualization",  # graphviz: a flow call imports it
    "anyio._backends._asyncio",
    "sklearn.calibration",
    "sklearn.datasets",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.svm",
    "skl2onnx",
    "skl2onnx.algebra.onnx_operator_mixin",
    "onnxruntime",
)
LIBRARIES = ("prefect", "sklearn", "skl2onnx", "onnxruntime", "typer", "pydantic", "docker")
_in_child = False
KEPT = frozenset({"kiln", "kiln.cli", "kiln.cli.warm", __name__})  # the runner's own modules


# -- the runner's side ---------------------------------------------------------------------


def serve(path: Path, entry: str) -> None:
    """Import what runs need, then take callers on `path` until stopped; each runs `entry`
    ("module:function")."""
    started = time.monotonic()
    for name in (entry.partition(":")[0], *PRELOAD):
        importlib.import_module(name)
    libraries = _library_stamps()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket: its owner only
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(16)
    log.info("warm runner ready on %s after %.1f s of imports", path, time.monotonic() - started)
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() up through the pipe
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wakeup_read, selectors.EVENT_READ, "reap")
    callers: dict[int, socket.socket] = {}  # child pid -> its caller's connection
    accepting = True
    while accepting or callers:
        for key, _ in selector.select():
            if key.data == "accept":
                if _library_stamps() != libraries:
                    # The caller finds no runner and runs the command itself.
                    log.warning("libraries changed on disk since the start: stopping")
                    selector.unregister(listener)
                    listener.close()
                    path.unlink(missing_ok=True)
                    accepting = False
                    continue
                _accept(listener, selector, callers, (wakeup_read, wakeup_write), entry)
            elif key.data == "reap":
                with contextlib.suppress(BlockingIOError):
                    os.read(wakeup_read, 512)
                _reap(selector, callers)
            else:  # a caller hung up before its command ended: end it too
                _hang_up(key.data, selector, callers)


def _accept(
    listener: socket.socket,
    selector: selectors.BaseSelector,
    callers: dict[int, socket.socket],
    pipe: tuple[int, int],
    entry: str,
) -> None:
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        conn.settimeout(READ_TIMEOUT)
        request, fds = _read_request(conn)
        if request["python"] != sys.executable:
            raise ValueError(
                f"the warm runner runs {sys.executable}, not {request['python']} "
                "(`kiln up` from this one replaces it)"
            )
        if request["source"] != source_dir():  # another checkout: its own code must run
            raise ValueError(
                f"the warm runner runs kiln from {source_dir()}, not {request['source']} "
                "(`kiln up` from this one replaces it)"
            )
    except (OSError, ValueError) as err:  # the runner serves on, whatever a caller sent
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"refused": str(err)}).encode() + b"\n")
        conn.close()
        for fd in fds:
            os.close(fd)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the runner's own files are none of the command's business
        for held in (listener, conn, *callers.values()):
            held.close()
        selector.close()
        for fd in pipe:
            os.close(fd)
        _child(request, fds, entry)  # never returns
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):  # a caller gone already: its hang-up ends the child
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    callers[pid] = conn
    selector.register(conn, selectors.EVENT_READ, pid)


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, 4, 3)
    if len(fds) != 3 or len(header) != 4:
        for fd in fds:
            os.close(fd)
        raise ValueError("a request carries its standard input, output and error")
    (size,) = struct.unpack("!I", header)
    if size > MAX_REQUEST:
        raise ValueError(f"a request of {size} bytes is over {MAX_REQUEST}")
    body = b""
    while len(body) < size:
        chunk = conn.recv(min(65536, size - len(body)))
        if not chunk:
            raise ValueError("the request was cut short")
        body += chunk
    request = json.loads(body)
    shapes = {"argv": list, "env": dict, "cwd": str, "python": str, "source": str}
    if not isinstance(request, dict) or not all(
        isinstance(request.get(key), kind) for key, kind in shapes.items()
    ):
        raise ValueError("a request is an object with argv, env, cwd, python and source")
    return request, fds


def _child(request: dict, fds: list[int], entry: str) -> None:
    """In the forked child: become the caller's command, run it, exit with its status."""
    global _in_child
    status = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, forwarded
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        try:
            os.chdir(request["cwd"])
        except OSError as err:
            sys.stderr.write(f"error: cannot work in {request['cwd']}: {err.strerror}\n")
            raise SystemExit(1) from None
        _in_child = True
        for name in [m for m in sys.modules if m.split(".")[0] in ("kiln", "flows", "serving")]:
            if name not in KEPT:  # kiln's own code is read again from disk, but the runner's
                del sys.modules[name]
        sys.argv = ["kiln", *request["argv"]]
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function)()  # ends the process itself
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must never return into the runner
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def refresh_prefect() -> None:
    """In a warm child: Prefect was imported before this command's environment was set,
    so it reads its settings and logging configuration again (a no-op elsewhere)."""
    if not _in_child:
        return
    from prefect.context import refresh_global_settings_context
    from prefect.logging.configuration import setup_logging

    refresh_global_settings_context()
    setup_logging(incremental=False)


def _reap(selector: selectors.BaseSelector, callers: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = callers.pop(pid, None)
        if conn is None:
            continue
        selector.unregister(conn)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"status": _exit_status(wait_status)}).encode() + b"\n")
        conn.close()


def _exit_status(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def _hang_up(pid: int, selector: selectors.BaseSelector, callers: dict[int, socket.socket]) -> None:
    conn = callers[pid]
    with contextlib.suppress(OSError):
        if conn.recv(1, socket.MSG_PEEK):
            conn.recv(4096)  # a caller sends nothing after its request: drop it
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    selector.unregister(conn)  # the child is reaped (and forgotten) when it exits
    callers.pop(pid)
    conn.close()


def _library_stamps() -> dict[str, float]:
    """When each imported library's package was last changed on disk."""
    stamps = {}
    for name in LIBRARIES:
        module = sys.modules.get(name)
        where = getattr(module, "__file__", None)
        if where:
            with contextlib.suppress(OSError):
                stamps[name] = os.stat(where).st_mtime
    return stamps


def answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def start(state_dir: Path, entry: str = ENTRY, timeout: float = 180.0) -> Path:
    """Start the warm runner for `state_dir` unless this interpreter's runner of this very
    kiln source answers; its socket."""
    from kiln.config.errors import KilnError
    from kiln.infra import daemon

    path = socket_path(state_dir)
    if answers(path) and daemon.running(_pid_file(state_dir), _marker()):
        return path
    log_file = state_dir / "logs" / "warm.log"
    # The source goes on the command line too: _main refuses to run another checkout's code
    # (`-m` finds kiln on sys.path, which the working folder may change) and _marker finds it.
    argv = [*_runner_command(), str(path), entry]
    try:
        stop(state_dir)  # one that no longer answers, or runs another interpreter
        pid = daemon.spawn(argv, env=dict(os.environ), log=log_file, pid_file=_pid_file(state_dir))
    except OSError as err:  # a state dir it cannot write to
        raise KilnError(f"the warm runner did not start: {err}") from err
    deadline = time.monotonic() + timeout  # its imports take seconds, longer under load
    while not answers(path):
        if daemon.exited(pid) or time.monotonic() > deadline:
            stop(state_dir)
            raise KilnError(
                f"the warm runner did not start; its log {log_file} ends:\n{daemon.tail(log_file)}"
            )
        time.sleep(0.2)
    return path


def stop(state_dir: Path) -> bool:
    """Stop the runner `start` started (and commands running in it); False if none ran."""
    from kiln.infra import daemon

    marker = "-m kiln.cli.warm.runner"  # any runner of this state dir, whatever its source
    return daemon.stop_group(_pid_file(state_dir), marker, [(signal.SIGTERM, 5.0)])


def _pid_file(state_dir: Path) -> Path:
    return state_dir / "run" / "warm.pid"


def _runner_command() -> list[str]:
    return [sys.executable, "-m", "kiln.cli.warm.runner", f"--source={source_dir()}"]


def _marker() -> str:
    """How this interpreter's runner of this kiln source shows in its command line."""
    return " ".join(_runner_command())


def _main() -> None:
    # Its own lines only: a root handler set here would reach every command's output.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    source, path, entry = sys.argv[1:4]
    if source != f"--source={source_dir()}":
        raise SystemExit(f"warm runner: asked for {source}, but this is kiln from {source_dir()}")
    serve(Path(path), entry)


if __name__ == "__main__":
    # Run as the imported module, not as __main__: the children keep kiln.cli.warm.runner
    # (and the fact that they are children) while they forget the rest of kiln's modules.
    from kiln.cli.warm import runner

    runner._main()
