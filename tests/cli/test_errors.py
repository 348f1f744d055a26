"""Bad input through the real entry point: one stderr line, the right status, no traceback,
and no side effect (nothing trained, built, pushed or stored). Keep this table growing.

Most rows call `kiln.cli.app.main` (the `kiln` console script) in this process; a few run
`python -m kiln.cli.app` in a subprocess to prove the two agree.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from kiln.cli.app import main
from kiln.config.settings import get_settings
from tests.support.http_standins import QuietHandler

USAGE, ERROR = 2, 1


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean environment: KILN_* pointing at folders that must stay empty."""
    for key in list(os.environ):
        if key.startswith("KILN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KILN_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("KILN_REGISTRY", "127.0.0.1:9")  # nothing could be pushed there
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "binary.csv").write_bytes(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    )
    (tmp_path / "rows.csv").write_text("1,2,3,4\n")
    os.mkfifo(tmp_path / "a-fifo")  # nothing ever writes to it: opening it would hang
    (tmp_path / "table.bin").write_bytes(b"PAR1" + bytes(64))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# (argv with {tmp} for the test's folder, extra environment, status, words stderr must hold)
CASES = [
    (["run", "--target", "mars"], {}, USAGE, "'mars' is not one of 'local', 'kubernetes'"),
    (["deploy", "v1", "--target", "k8s"], {}, USAGE, "'--target'"),
    (["rollback", "--target", "mars"], {}, USAGE, "'--target'"),
    (["run", "--kernel", "nope"], {}, USAGE, "'nope' is not one of 'rbf', 'linear'"),
    (["train", "--kernel", "nope"], {}, USAGE, "'--kernel'"),
    (["run", "--C", "-1"], {}, USAGE, "-1 is not a positive number; C is the SVM's"),
    (["train", "--C", "0"], {}, USAGE, "0 is not a positive number"),
    (["run", "--C", "nan"], {}, USAGE, "nan is not a positive number"),
    (["run", "--gamma", "lots"], {}, USAGE, "'lots' is not 'scale', 'auto' or a positive number"),
    (["train", "--gamma", "-3"], {}, USAGE, "'-3' is not 'scale', 'auto'"),
    (["run", "--min-score", "2"], {}, USAGE, "'--min-score'"),
    (["train", "--min-score", "-0.1"], {}, USAGE, "'--min-score'"),
    (["run", "--keep", "0"], {}, USAGE, "'--keep'"),
    (["prune", "--keep", "0"], {}, USAGE, "'--keep'"),
    (["run", "--builder", "fast"], {}, USAGE, "'fast' is not one of 'auto', 'engine', 'layer'"),
    (["build", "v1", "--builder", "fast"], {}, USAGE, "'--builder'"),
    (["run", "--seed", "-1"], {}, USAGE, "'--seed'"),
    (["train", "--data", "{tmp}/a-directory"], {}, USAGE, "is a directory; give a CSV file"),
    (["run", "--data", "{tmp}/a-fifo"], {}, USAGE, "is not a regular file (a pipe"),
    (["run", "--data", "{tmp}/table.bin"], {}, USAGE, "is a Parquet file: name it .parquet"),
    (["run", "--data", "{tmp}/binary.csv"], {}, USAGE, "is not a text CSV file"),
    (["train", "--data", "{tmp}/absent.csv"], {}, USAGE, "absent.csv': no such file"),
    (["run", "--data", "foo://bucket/x.csv"], {}, USAGE, "unknown URL scheme 'foo://'"),
    (["train", "--data", "synthetic:lots"], {}, USAGE, "use synthetic:ROWS"),
    (["run", "--data", "synthetic:0"], {}, USAGE, "use synthetic:ROWS"),
    (["serve", "--port", "99999"], {}, USAGE, "'--port'"),
    (["serve", "--port", "0"], {}, USAGE, "'--port'"),
    (["serve", "--workers", "0"], {}, USAGE, "'--workers'"),
    (["logs", "--tail", "0"], {}, USAGE, "'--tail'"),
    (["up", "--prefect-port", "70000"], {}, USAGE, "'--prefect-port'"),
    (["models", "diff", "a"], {}, USAGE, "Missing argument 'b'"),
    (["predict", "{tmp}/absent.csv"], {}, USAGE, "does not exist"),
    (["predict", "{tmp}/a-directory"], {}, USAGE, "is a directory"),
    (["predict", "{tmp}/rows.csv", "--endpoint", "ftp://x"], {}, USAGE, "not an http(s) URL"),
    (["models", "-o", "yaml"], {}, USAGE, "'yaml' is not one of 'text', 'json'"),
    (["nosuch"], {}, USAGE, "No such command 'nosuch'"),
    (["run", "--nosuch"], {}, USAGE, "No such option: --nosuch"),
    (["models"], {"KILN_TARGET": "k8s"}, ERROR, "KILN_TARGET='k8s' is not valid"),
    (["prune"], {"KILN_KEEP": "0"}, ERROR, "KILN_KEEP='0' is not valid"),
    (["run"], {"KILN_GATE_THRESHOLD": "2"}, ERROR, "KILN_GATE_THRESHOLD='2' is not valid"),
    (["serve"], {"KILN_SERVE_PORT": "99999"}, ERROR, "KILN_SERVE_PORT='99999' is not valid"),
    (["train"], {"KILN_RETRIES": "many"}, ERROR, "fix or unset KILN_RETRIES"),
    (["status"], {"KILN_LOCAL_NAME": "Bad Name"}, ERROR, "KILN_LOCAL_NAME='Bad Name'"),
    (["models", "show", "nope"], {}, ERROR, "no version 'nope'"),
    (["deploy", "nope"], {}, ERROR, "no version 'nope'"),
    (["models", "diff", "a", "b"], {}, ERROR, "no version 'a'"),
    (["rollback"], {}, ERROR, "nothing was ever deployed"),
    (["predict", "{tmp}/rows.csv"], {}, ERROR, "no version"),
    (
        ["logs", "--target", "local"],
        {"DOCKER_HOST": "unix://{tmp}/absent.sock"},
        ERROR,
        "cannot reach the container engine at unix://",
    ),
    (
        ["run"],
        {"DOCKER_HOST": "unix://{tmp}/absent.sock"},
        ERROR,
        "start it with `kiln up`, or set DOCKER_HOST",
    ),
    (
        ["run", "--target", "kubernetes"],
        {"KUBECONFIG": "{tmp}/absent-kubeconfig"},
        ERROR,
        "no usable Kubernetes configuration (kubeconfig {tmp}/absent-kubeconfig",
    ),
    (
        ["logs", "--target", "kubernetes"],
        {"KUBECONFIG": "{tmp}/absent-kubeconfig"},
        ERROR,
        "no usable Kubernetes configuration",
    ),
    (
        ["undeploy", "--target", "kubernetes"],
        {"KUBECONFIG": "{tmp}/absent-kubeconfig"},
        ERROR,
        "no usable Kubernetes configuration",
    ),
]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def _fill(value: str, tmp: Path) -> str:
    return value.replace("{tmp}", str(tmp))


@pytest.mark.parametrize(("argv", "env", "status", "words"), CASES, ids=lambda v: str(v))
def test_a_bad_input_is_one_line_before_any_work(
    place: Path, monkeypatch, capsys, argv, env, status, words
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, _fill(value, place))
    code, out, err = run_main([_fill(a, place) for a in argv], capsys)
    assert code == status, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and _fill(words, place) in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert not (place / "store" / "versions").exists()  # nothing trained or stored
    assert not (place / "state").exists()  # nothing started


def test_a_port_in_use_is_one_line(place: Path, capsys) -> None:
    for port in busy_port():
        code, _, err = run_main(["serve", "--port", str(port)], capsys)
        assert code == ERROR
        assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
        assert "--port or KILN_SERVE_PORT" in err and len(err.splitlines()) == 1


def test_debug_shows_the_traceback(place: Path, monkeypatch, capsys) -> None:
    code, _, err = run_main(["--debug", "models", "show", "nope"], capsys)
    assert code == ERROR and "Traceback" in err and err.splitlines()[-1].startswith("error: ")
    monkeypatch.setenv("KILN_DEBUG", "1")
    code, _, err = run_main(["models", "show", "nope"], capsys)
    assert code == ERROR and "Traceback" in err


def test_version_and_help(place: Path, capsys) -> None:
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and out.startswith("kiln ")
    for command in ("undeploy", "logs", "predict", "status", "run", "deploy"):
        code, out, _ = run_main([command, "--help"], capsys)
        assert code == 0 and "Usage: kiln " + command in " ".join(out.split())
    code, out, _ = run_main(["models", "diff", "--help"], capsys)
    assert code == 0 and "parameters, metrics, data and libraries" in " ".join(out.split())


@pytest.mark.parametrize(
    ("argv", "env", "status", "words"),
    [
        (["run", "--target", "mars"], {}, USAGE, "'mars' is not one of"),
        (["models"], {"KILN_KEEP": "0"}, ERROR, "KILN_KEEP='0' is not valid"),
    ],
)
def test_the_installed_command_line_agrees(place: Path, argv, env, status, words) -> None:
    environ = {**os.environ, **env}
    result = subprocess.run(
        [sys.executable, "-m", "kiln.cli.app", *argv],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )
    assert result.returncode == status
    assert result.stderr.count("\n") == 1 and words in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


class _RegistryStandIn(QuietHandler):
    """Answers /v2/ the way a registry behind a login does: 401 with a Bearer challenge."""

    def do_GET(self) -> None:  # noqa: N802
        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        challenge = ("Www-Authenticate", 'Bearer realm="http://127.0.0.1/token"')
        self.reply(401, body, [challenge, ("Content-Type", "application/json")])


@pytest.fixture
def kubeconfig(place: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kubeconfig that loads (the target check passes) for a cluster nothing must reach."""
    path = place / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(path))


def test_an_unreachable_registry_is_one_line_before_training(
    place: Path, kubeconfig: None, capsys
) -> None:
    started = time.monotonic()
    code, out, err = run_main(["run", "--target", "kubernetes"], capsys)

    assert code == ERROR and out == ""
    assert err.splitlines() == [
        "error: registry 127.0.0.1:9 is unreachable (ConnectionError); start it with "
        "`kiln up`, or point KILN_REGISTRY at one that runs"
    ]
    assert not (place / "store").exists()  # nothing trained or stored
    assert time.monotonic() - started < 10  # no retries, no Prefect server started


def test_a_registry_that_wants_a_login_is_named_before_training(
    place: Path, kubeconfig: None, monkeypatch, capsys
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RegistryStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("KILN_REGISTRY", f"127.0.0.1:{server.server_address[1]}")
        code, _, err = run_main(["run", "--target", "kubernetes"], capsys)
    finally:
        server.shutdown()
        server.server_close()

    assert code == ERROR and len(err.splitlines()) == 1
    assert "refused access (HTTP 401: it wants credentials kiln does not send)" in err
    assert not (place / "store").exists()
