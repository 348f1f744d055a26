"""The warm runner (kiln/cli/warm/) for real: a runner process started on this test's own
state dir, and the `kiln` command (kiln/cli/launch.py) in new processes handing commands to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.cli import warm
from kiln.cli.warm import caller
from kiln.cli.warm import runner as warm_runner
from kiln.store.artifact_store import ArtifactStore
from tests.support.factories import write_csv


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("warm-state")
    warm_runner.start(state)
    yield state
    assert warm_runner.stop(state)


def kiln(state: Path, *args: str, cwd: Path, env: dict[str, str] | None = None, **popen):
    """`kiln ARGS` as the console script runs it, pointed at `state`'s runner."""
    return subprocess.Popen(
        [sys.executable, "-m", "kiln.cli.launch", *args],
        cwd=cwd,
        env={**os.environ, "KILN_STATE_DIR": str(state), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def children_of(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def runner_pid(state: Path) -> int:
    return int((state / "run" / "warm.pid").read_text())


def test_a_command_runs_in_the_runner_with_the_callers_folder_environment_and_output(
    runner: Path, tmp_path: Path
) -> None:
    write_csv(
        tmp_path / "points.csv",
        ["x", "y", "label"],
        [[i % 7, (i * 3) % 5, "a" if i % 2 else "b"] for i in range(60)],
    )
    before = children_of(runner_pid(runner))
    store = tmp_path / "store"

    done = kiln(
        runner,
        "train",
        "--data",
        "points.csv",  # relative: the caller's folder
        "--min-score",
        "0",
        cwd=tmp_path,
        env={"KILN_STORE": str(store)},
    )
    out, err = done.communicate(timeout=300)

    assert done.returncode == 0, err
    [version] = [v.version for v in ArtifactStore(store).list_versions()]
    assert f"stored version {version}" in out  # printed on the caller's own stdout
    assert children_of(runner_pid(runner)) == before  # the child is gone, reaped


def test_an_error_is_the_same_one_line_and_status_as_in_process(
    runner: Path, tmp_path: Path
) -> None:
    argv = ["train", "--data", str(tmp_path / "missing.csv")]
    warmed = kiln(runner, *argv, cwd=tmp_path)
    warm_out, warm_err = warmed.communicate(timeout=300)
    here = subprocess.run(
        [sys.executable, "-m", "kiln.cli.app", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert warmed.returncode == here.returncode == 2  # a usage error
    assert warm_err == here.stderr and warm_err.count("\n") == 1
    assert "missing.csv" in warm_err and "Traceback" not in warm_err


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A TCP port that takes connections and never answers: a command waiting on it waits
    until it is interrupted (its address as DOCKER_HOST)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def waiting_run(state: Path, cwd: Path, engine: str) -> subprocess.Popen:
    """`kiln run` stuck in its check of the container engine, before any work."""
    return kiln(state, "run", cwd=cwd, env={"DOCKER_HOST": engine, "KILN_ENGINE_TIMEOUT": "600"})


def wait_for(condition, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_ctrl_c_reaches_the_command(runner: Path, tmp_path: Path, blackhole: str) -> None:
    pid = runner_pid(runner)
    before = children_of(pid)
    started = waiting_run(runner, tmp_path, blackhole)
    assert wait_for(lambda: children_of(pid) != before), "the command never started"
    time.sleep(1)  # in its engine check by now

    started.send_signal(signal.SIGINT)
    _, err = started.communicate(timeout=120)

    assert started.returncode == 130, err  # as in its own process: typer's Exit(130)
    assert "Traceback" not in err


def test_a_caller_that_goes_away_takes_its_command_with_it(
    runner: Path, tmp_path: Path, blackhole: str
) -> None:
    pid = runner_pid(runner)
    before = children_of(pid)
    started = waiting_run(runner, tmp_path, blackhole)
    assert wait_for(lambda: children_of(pid) != before), "the command never started"

    started.kill()  # SIGKILL: the caller cannot say goodbye
    started.communicate(timeout=30)

    assert wait_for(lambda: children_of(pid) == before), "the command outlived its caller"


def send(state: Path, body: bytes, fds: list[int], size: int | None = None) -> dict:
    """A raw request to the runner; its first reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(warm.socket_path(state)))
        header = struct.pack("!I", len(body) if size is None else size)
        socket.send_fds(conn, [header], fds)
        with contextlib.suppress(BrokenPipeError):  # refused on its header alone
            conn.sendall(body)
        return json.loads(conn.makefile().readline())


def test_a_request_from_another_interpreter_is_refused(runner: Path) -> None:
    request = {
        "argv": ["--version"],
        "env": {},
        "cwd": "/",
        "python": "/not/this/python",
        "source": warm.source_dir(),
    }
    reply = send(runner, json.dumps(request).encode(), [0, 1, 2])
    assert "/not/this/python" in reply["refused"]


def test_a_request_from_another_checkout_is_refused(runner: Path) -> None:
    """A caller of the same interpreter but another kiln source must run its own code."""
    request = {
        "argv": ["--version"],
        "env": {},
        "cwd": "/",
        "python": sys.executable,
        "source": "/another/checkout/kiln",
    }
    reply = send(runner, json.dumps(request).encode(), [0, 1, 2])
    assert "/another/checkout/kiln" in reply["refused"]


def test_the_caller_sends_nothing_to_a_socket_of_another_user(tmp_path: Path) -> None:
    """The environment carries secrets: a socket that another user serves gets no byte."""
    folder = Path(tempfile.mkdtemp(prefix="kiln-peer-"))  # pytest's folders: root's only
    folder.chmod(0o777)
    path = folder / "warm.sock"
    listener = subprocess.Popen(
        [sys.executable, "-c", SNOOP, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert listener.stdout is not None and listener.stdout.readline() == "listening\n"
    status = caller.run_there(["train"], path)
    out, _ = listener.communicate(timeout=30)
    shutil.rmtree(folder)
    assert status is None  # the caller runs the command itself
    assert out == "received 0 bytes, 0 fds\n"


# Listens as user nobody (65534): the kernel records the listener's credentials at listen().
SNOOP = """
import os, socket, sys
os.setgid(65534)
os.setuid(65534)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
server.listen(1)
print("listening", flush=True)
conn, _ = server.accept()
conn.settimeout(5)
try:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
except OSError:
    data, fds = b"", []
print(f"received {len(data)} bytes, {len(fds)} fds", flush=True)
"""


@pytest.mark.parametrize(
    ("body", "fds", "size", "reason"),
    [
        (b"{}", [], None, "standard input, output and error"),
        (b"x" * 10, [0, 1, 2], warm.MAX_REQUEST + 1, "is over"),
        (b"[1, 2]", [0, 1, 2], None, "argv, env, cwd, python and source"),
        (b'{"argv": "run"}', [0, 1, 2], None, "argv, env, cwd, python and source"),
    ],
)
def test_a_malformed_request_is_refused_and_the_runner_serves_on(
    runner: Path, tmp_path: Path, body: bytes, fds: list[int], size: int | None, reason: str
) -> None:
    reply = send(runner, body, fds, size)
    assert reason in reply["refused"]
    done = kiln(runner, "train", "--data", str(tmp_path / "nothing.csv"), cwd=tmp_path)
    done.communicate(timeout=300)
    assert done.returncode == 2


def test_with_no_runner_the_command_runs_in_its_own_process(tmp_path: Path) -> None:
    done = kiln(tmp_path, "train", "--data", str(tmp_path / "nothing.csv"), cwd=tmp_path)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 2 and "nothing.csv" in err


def test_only_run_and_train_are_handed_over() -> None:
    assert warm.command_of(["--debug", "run", "--seed", "3"]) == "run"
    assert warm.command_of(["train"]) == "train"
    assert warm.command_of(["--help"]) is None
    assert warm.command_of(["models", "list"]) == "models"
    assert "models" not in warm.COMMANDS


def test_starting_again_keeps_the_runner_that_answers(runner: Path) -> None:
    pid = runner_pid(runner)
    assert warm_runner.start(runner) == warm.socket_path(runner)
    assert runner_pid(runner) == pid


def test_kiln_up_goes_on_without_a_runner_that_cannot_start(tmp_path: Path, capsys) -> None:
    from kiln.cli.infra import _start_warm_runner
    from kiln.config.settings import get_settings

    not_a_folder = tmp_path / "state"
    not_a_folder.write_text("a file where the state dir should be")

    _start_warm_runner(get_settings().with_overrides(state_dir=not_a_folder))

    err = capsys.readouterr().err
    assert err.startswith("warning: the warm runner did not start: ") and err.count("\n") == 1
    assert "kiln run imports everything itself" in err


def test_a_folder_gone_before_the_command_starts_is_one_line(runner: Path) -> None:
    err_read, err_write = os.pipe()
    request = {
        "argv": ["train"],
        "env": dict(os.environ),
        "cwd": "/no/such/folder",
        "python": sys.executable,
        "source": warm.source_dir(),
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(60)
        conn.connect(str(warm.socket_path(runner)))
        body = json.dumps(request).encode()
        socket.send_fds(conn, [struct.pack("!I", len(body))], [0, err_write, err_write])
        conn.sendall(body)
        os.close(err_write)
        replies = conn.makefile()
        assert "pid" in json.loads(replies.readline())
        with os.fdopen(err_read) as err:
            said = err.read()
        assert json.loads(replies.readline()) == {"status": 1}
    assert said == "error: cannot work in /no/such/folder: No such file or directory\n"
