"""The warm runner: `kiln run` without paying for its imports every time.

A `kiln run` spends about 5 s of its 11 importing Prefect, scikit-learn, skl2onnx and ONNX
Runtime. `kiln up` starts this runner (a daemon, like the Prefect server): it imports them
once and waits on a unix socket in the state dir. The `kiln` command (kiln/cli/launch.py)
connects for `kiln run` and `kiln train`, and passes its standard input, output and error
(SCM_RIGHTS), its arguments, environment and working folder. The runner forks; the child
takes them all, forgets kiln's own modules (so a changed checkout runs as changed), and
runs the command as kiln/cli/app.py would in the caller's own process: same output on the
caller's terminal, same exit status, which the runner sends back.

Each command is its own process: nothing of one run leaks into the next. The runner
refuses a caller on another interpreter, and stops itself (the caller then runs the
command itself) when a library it imported has changed on disk since it started.
"""

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
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

COMMANDS = frozenset({"run", "train"})  # the commands worth handing over
MAX_REQUEST = 1 << 20  # bytes of arguments and environment
READ_TIMEOUT = 5.0  # seconds a caller has to send its request (callers are read in turn)
FIRST_REPLY = 30.0  # seconds a caller waits for the runner to take its command
# What a run imports: kiln's entry points (which import Prefect, typer and pydantic), and
# what a run imports later, inside functions (a `kiln run` imported 200 more modules, 1 s).
PRELOAD = (
    "kiln.cli.app",
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


def socket_path(state_dir: Path) -> Path:
    return state_dir / "run" / "warm.sock"


def command_of(args: Sequence[str]) -> str | None:
    """The command name in a `kiln` command line (after global options), if any."""
    for arg in args:
        if not arg.startswith("-"):
            return arg
        if arg in ("--help", "--version"):
            return None
    return None


# -- the caller's side (stdlib only: it runs before anything heavy is imported) -----------


def run_there(args: Sequence[str], path: Path) -> int | None:
    """Run `kiln ARGS` in the warm runner at `path`; its exit status, or None when no
    runner takes it (none answers, or it refused): the caller then runs it itself."""
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(READ_TIMEOUT)
        conn.connect(str(path))
    except OSError:
        return None
    with conn:
        try:
            cwd = os.getcwd()
        except OSError:  # a folder removed under the caller: let it find out itself
            return None
        request = json.dumps(
            {"argv": list(args), "env": dict(os.environ), "cwd": cwd, "python": sys.executable}
        ).encode()
        try:
            socket.send_fds(conn, [struct.pack("!I", len(request))], [0, 1, 2])
            conn.sendall(request)
            conn.settimeout(FIRST_REPLY)
            first = _read_reply(conn)
        except (OSError, ValueError):
            return None
        if "refused" in first:
            sys.stderr.write(f"kiln: {first['refused']}: running here instead\n")
            return None
        return _wait_for_status(conn, int(first["pid"]))


def _wait_for_status(conn: socket.socket, pid: int) -> int:
    """Forward Ctrl-C and termination to the child; return its exit status."""

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    conn.settimeout(None)  # a run takes as long as it takes; the runner answers at its end
    try:
        return int(_read_reply(conn)["status"])
    except (OSError, ValueError, KeyError):
        sys.stderr.write("kiln: the warm runner went away before the command ended\n")
        return 1


def _read_reply(conn: socket.socket) -> dict:
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise ValueError("connection closed")
        line += chunk
        if len(line) > 4096:
            raise ValueError("reply too long")
    return json.loads(line)


# -- the runner's side ---------------------------------------------------------------------


def serve(path: Path) -> None:
    """Import what runs need, then take callers on `path` until stopped."""
    started = time.monotonic()
    for name in PRELOAD:
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
                _accept(listener, selector, callers, (wakeup_read, wakeup_write))
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
        _child(request, fds)  # never returns
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
    shapes = {"argv": list, "env": dict, "cwd": str, "python": str}
    if not isinstance(request, dict) or not all(
        isinstance(request.get(key), kind) for key, kind in shapes.items()
    ):
        raise ValueError("a request is an object with argv, env, cwd and python")
    return request, fds


def _child(request: dict, fds: list[int]) -> None:
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
            if name != __name__:  # kiln's own code is read again from disk, but this module
                del sys.modules[name]
        sys.argv = ["kiln", *request["argv"]]
        from kiln.cli.app import main

        main()  # ends the process itself (kiln.cli.app.exit_now)
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


def start(state_dir: Path, timeout: float = 180.0) -> Path:
    """Start the warm runner for `state_dir` unless one answers; its socket."""
    from kiln.config.errors import KilnError
    from kiln.infra import daemon

    path = socket_path(state_dir)
    if answers(path) and daemon.running(_pid_file(state_dir), _marker()):
        return path
    log_file = state_dir / "logs" / "warm.log"
    argv = [sys.executable, "-m", "kiln.cli.warm", str(path)]
    try:
        stop(state_dir)  # one that no longer answers, or runs another interpreter
        pid = daemon.spawn(argv, env=dict(os.environ), log=log_file, pid_file=_pid_file(state_dir))
    except OSError as err:  # a state dir it cannot write to
        raise KilnError(f"the warm runner did not start: {err}") from err
    deadline = time.monotonic() + timeout  # its imports: about 5 s here, more under load
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

    return daemon.stop_group(_pid_file(state_dir), "-m kiln.cli.warm", [(signal.SIGTERM, 5.0)])


def _pid_file(state_dir: Path) -> Path:
    return state_dir / "run" / "warm.pid"


def _marker() -> str:
    """How this interpreter's runner shows in its command line."""
    return f"{sys.executable} -m kiln.cli.warm"


def _main() -> None:
    # Its own lines only: a root handler set here would reach every command's output.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    serve(Path(sys.argv[1]))


if __name__ == "__main__":
    # Run as the imported module, not as __main__: the children keep kiln.cli.warm (and the
    # fact that they are children) while they forget the rest of kiln's modules.
    from kiln.cli import warm

    warm._main()
