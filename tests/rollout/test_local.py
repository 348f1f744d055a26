"""The local target for real: containers on the engine (podman's Docker API here), marked e2e.

The images are built by these tests from tests/flows/standin/server.py, a STAND-IN for
kiln's model server (stdlib only, builds in about a second on the local Python base), so
what is tested here is the rollout's container side: candidate on a free port, readiness,
smoke test, switch on the stable port, roll back. A broken image is one whose model fails
its sha256 check at start-up, as kiln's server does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiln.config.errors import RolloutError
from kiln.rollout import LOCAL, previous_of, roll_back, roll_out, serving_problem
from kiln.rollout.local import CURRENT, LocalTarget
from kiln.rollout.smoke import http_caller
from kiln.store.artifact_store import ArtifactStore
from tests.conftest import engine_client, free_port
from tests.support.standin_image import BASE_IMAGE, build_standin_image

pytestmark = pytest.mark.e2e

SAMPLE_INPUT = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture(scope="module")
def docker_client() -> Iterator[object]:
    try:
        client = engine_client(timeout=120)
        client.ping()
    except Exception as err:
        pytest.skip(f"no container engine API (start it with scripts/infra.sh up): {err}")
    try:
        client.images.get(BASE_IMAGE)
    except Exception:
        pytest.skip(f"base image {BASE_IMAGE} is missing (scripts/infra.sh up builds it)")
    yield client
    client.close()


@pytest.fixture
def engine(docker_client) -> Iterator[LocalTarget]:
    engine = LocalTarget(
        docker_client,
        port=free_port(),
        name_prefix=f"kiln-test-{uuid.uuid4().hex[:6]}",
        timeout=60,
        candidate_port=free_port,
        poll_interval=0.1,
        stop_timeout=5,
    )
    yield engine
    engine.stop_all()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


ImageMaker = Callable[..., tuple[str, str]]


@pytest.fixture
def make_image(docker_client, store: ArtifactStore, tmp_path: Path) -> Iterator[ImageMaker]:
    built: list[str] = []

    def make(
        name: str,
        *,
        break_sha: bool = False,
        report: str | None = None,
        predict_status: int = 200,
        oldest_takes_all: bool = True,
    ) -> tuple[str, str]:
        model = f"model {name}".encode()
        version = store.put(model, {0: "a", 1: "b"}, {"sample_input": SAMPLE_INPUT})
        tag = f"localhost/kiln-standin:{name}-{uuid.uuid4().hex[:6]}"
        build_standin_image(
            docker_client,
            model,
            report or version,
            tag,
            tmp_path / f"ctx-{name}",
            sha256="0" * 64 if break_sha else None,
            predict_status=predict_status,
            oldest_takes_all=oldest_takes_all,
        )
        built.append(tag)
        return version, tag

    yield make
    for tag in built:
        with contextlib.suppress(Exception):
            docker_client.images.remove(tag, force=True)


def version_on(url: str) -> str:
    return http_caller(url)("GET", "/metadata", None).json()["version"]


class Watcher:
    """Asks the stable endpoint for its version, over and over, while a rollout runs."""

    def __init__(self, url: str) -> None:
        self.url, self.seen, self.errors = url, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        call = http_caller(self.url, timeout=5)
        while not self._stop.is_set():
            try:
                reply = call("GET", "/metadata", None)
                self.seen.append(reply.json()["version"] if reply.status == 200 else reply.status)
            except OSError as err:
                self.errors.append(str(err))

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_new_version_rolls_out_and_answers_on_the_stable_port(
    store: ArtifactStore,
    engine: LocalTarget,
    make_image: ImageMaker,
) -> None:
    old, old_image = make_image("a")
    new, new_image = make_image("b")

    first = roll_out(store, old, engine, image=old_image)
    assert first.endpoint == engine.endpoint
    assert version_on(engine.endpoint) == old

    second = roll_out(store, new, engine, image=new_image)

    assert version_on(engine.endpoint) == new
    assert (second.previous_version, second.previous_image) == (old, old_image)
    containers = engine.containers()
    assert [(c.version, c.role, c.status) for c in containers] == [(new, CURRENT, "running")]
    record = store.deployment(LOCAL)
    assert (record.current, record.previous) == (new, old)


def test_a_broken_image_is_rolled_back_and_the_old_version_answers_throughout(
    store: ArtifactStore,
    engine: LocalTarget,
    make_image: ImageMaker,
) -> None:
    old, old_image = make_image("a")
    broken, broken_image = make_image("broken", break_sha=True)
    roll_out(store, old, engine, image=old_image)

    with Watcher(engine.endpoint) as watcher, pytest.raises(RolloutError) as caught:
        roll_out(store, broken, engine, image=broken_image)

    message = str(caught.value)
    assert "exited with code 3" in message and "refusing to start" in message
    assert f"{old} keeps serving" in message
    assert watcher.errors == []
    assert watcher.seen and set(watcher.seen) == {old}
    assert [(c.version, c.status) for c in engine.containers()] == [(old, "running")]
    assert store.deployment(LOCAL).current == old


def test_a_new_version_failing_its_smoke_test_is_removed(
    store: ArtifactStore,
    engine: LocalTarget,
    make_image: ImageMaker,
) -> None:
    old, old_image = make_image("a")
    new, liar = make_image("liar", report="not-the-version")
    failing_version, failing = make_image("failing", predict_status=500)
    roll_out(store, old, engine, image=old_image)

    # Each starts beside the old one on the stable port (no candidate), and fails its
    # checks on its own port; no client on the stable port ever reaches it.
    with Watcher(engine.endpoint) as watcher:
        with pytest.raises(RolloutError, match="reports version 'not-the-version'"):
            roll_out(store, new, engine, image=liar)
        with pytest.raises(RolloutError, match="POST /predict answered 500"):
            roll_out(store, failing_version, engine, image=failing)

    assert watcher.errors == []
    assert watcher.seen and set(watcher.seen) == {old}
    assert version_on(engine.endpoint) == old
    assert [c.version for c in engine.containers()] == [old]


def test_rollback_ships_the_previous_version_again(
    store: ArtifactStore,
    engine: LocalTarget,
    make_image: ImageMaker,
) -> None:
    old, old_image = make_image("a")
    new, new_image = make_image("b")
    roll_out(store, old, engine, image=old_image)
    roll_out(store, new, engine, image=new_image)

    version, image = previous_of(store, LOCAL)
    result = roll_out(store, version, engine, image=image, rolled_back=True)

    assert result.rolled_back and result.version == old
    assert version_on(engine.endpoint) == old
    record = store.deployment(LOCAL)
    assert (record.current, record.previous) == (old, new)


class Poller:
    """GET /health on the stable port, a new connection each, until stopped; every
    outcome kept (a status, or the error a client saw)."""

    def __init__(self, url: str) -> None:
        self.call = http_caller(url, timeout=10)
        self.outcomes: list[object] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.outcomes.append(self.call("GET", "/health", None).status)
            except OSError as err:
                self.outcomes.append(f"{type(err).__name__}: {err}")
            self._stop.wait(0.01)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_deploy_and_a_rollback_refuse_no_request(
    store: ArtifactStore,
    engine: LocalTarget,
    make_image: ImageMaker,
) -> None:
    old, old_image = make_image("a")
    new, new_image = make_image("b")
    roll_out(store, old, engine, image=old_image)

    with Poller(engine.endpoint) as poller:
        roll_out(store, new, engine, image=new_image)
        assert version_on(engine.endpoint) == new
        roll_back(store, engine)
        assert version_on(engine.endpoint) == old

    failed = [outcome for outcome in poller.outcomes if outcome != 200]
    assert failed == [], f"{len(failed)} of {len(poller.outcomes)} requests failed"
    assert len(poller.outcomes) > 20  # the stable port was really polled across both switches
    running = [(c.version, c.status) for c in engine.containers()]
    assert running == [(old, "running")]


def test_a_container_that_holds_the_port_alone_is_stopped_then_replaced(
    store: ArtifactStore,
    engine: LocalTarget,
    make_image: ImageMaker,
) -> None:
    """An earlier kiln's container (bridge network, port published, no SO_REUSEPORT)
    cannot share the port: the switch stops it first, and restores it if the new one fails."""
    old, old_image = make_image("a")
    new, new_image = make_image("b")
    broken, broken_image = make_image("broken", break_sha=True)
    roll_out(store, old, engine, image=old_image)
    engine.stop_all()
    engine.on_engine.run(
        f"{engine.name_prefix}-earlier", old_image, old, CURRENT, engine.port, start=True
    )
    engine.on_engine.wait_ready(f"{engine.name_prefix}-earlier", engine.endpoint)

    with pytest.raises(RolloutError, match="exited with code 3"):
        roll_out(store, broken, engine, image=broken_image)
    assert version_on(engine.endpoint) == old  # the candidate failed: never touched

    roll_out(store, new, engine, image=new_image)
    assert version_on(engine.endpoint) == new
    assert [(c.version, c.status) for c in engine.containers()] == [(new, "running")]


def kill_unseen(docker_client, name: str) -> int:
    """SIGKILL podman's monitor of container `name` (conmon), then its process, as when a
    machine's processes are killed without a reboot: podman keeps listing it running.
    Returns the dead process's PID."""
    state = process_of(docker_client, name)
    os.kill(state["ConmonPid"], signal.SIGKILL)
    os.kill(state["Pid"], signal.SIGKILL)
    return state["Pid"]


def process_of(docker_client, name: str) -> dict:
    """The container's state as podman's own API reports it: its PID and its monitor's."""
    api = docker_client.api
    reply = api.get(f"{api.base_url}/v4.0.0/libpod/containers/{name}/json")
    if reply.status_code == 404:
        pytest.skip("needs podman (its container monitor, conmon, is what dies here)")
    reply.raise_for_status()
    return reply.json()["State"]


def test_the_same_version_listed_running_but_dead_is_started_again(
    docker_client, store: ArtifactStore, engine: LocalTarget, make_image: ImageMaker
) -> None:
    """The engine's word is not proof: a container whose process died unseen is still
    listed running. Shipping that version again must notice and start it anew."""
    version, image = make_image("a")
    roll_out(store, version, engine, image=image)
    [dead] = engine.containers()
    dead_pid = kill_unseen(docker_client, dead.name)
    assert engine.current() is not None  # still listed running

    problem = serving_problem(store, version, engine)
    assert problem is not None and f"{engine.endpoint} does not answer as {version}" in problem

    roll_out(store, version, engine, image=image)

    assert version_on(engine.endpoint) == version
    assert serving_problem(store, version, engine) is None
    [now] = engine.containers()
    assert (now.version, now.status) == (version, "running")
    assert docker_client.containers.get(now.name).attrs["State"]["Pid"] != dead_pid


def test_the_same_version_hanging_is_replaced_within_the_check_timeout(
    docker_client, store: ArtifactStore, engine: LocalTarget, make_image: ImageMaker
) -> None:
    """A process that holds the port and answers nothing (SIGSTOP) fails the check in
    `check_timeout`, and is replaced."""
    engine.check_timeout = 1.0
    version, image = make_image("a")
    roll_out(store, version, engine, image=image)
    [hung] = engine.containers()
    pid = process_of(docker_client, hung.name)["Pid"]
    os.kill(pid, signal.SIGSTOP)

    problem = serving_problem(store, version, engine)
    assert problem is not None and "timed out" in problem

    roll_out(store, version, engine, image=image)

    assert version_on(engine.endpoint) == version
    [now] = engine.containers()
    assert now.status == "running"
    assert docker_client.containers.get(now.name).attrs["State"]["Pid"] != pid
