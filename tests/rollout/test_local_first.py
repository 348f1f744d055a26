"""The local target's first deploy: one container, started straight on the stable port.

With no kiln container on the stable port (and nothing else holding it) no version serves
that a failure could hurt, so no candidate is started. Real containers on the engine
(marked e2e), with the stand-in images of tests/rollout/test_local.py.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from kiln.config.errors import RolloutError
from kiln.rollout import LOCAL, roll_out
from kiln.rollout.local import CURRENT, LocalTarget
from kiln.store.artifact_store import ArtifactStore
from tests.conftest import free_port
from tests.rollout import test_local as local_e2e
from tests.rollout.test_local import ImageMaker, version_on

# The real-engine fixtures of the local target's own tests.
docker_client = local_e2e.docker_client
make_image = local_e2e.make_image
store = local_e2e.store

pytestmark = pytest.mark.e2e


class CountingContainers:
    """The engine's real container collection, with every container it creates named."""

    def __init__(self, containers: Any) -> None:
        self._containers = containers
        self.created: list[str] = []

    def create(self, **kwargs: Any) -> Any:
        self.created.append(kwargs["name"])
        return self._containers.create(**kwargs)

    def run(self, **kwargs: Any) -> Any:
        self.created.append(kwargs["name"])
        return self._containers.run(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._containers, name)


class CountingClient:
    def __init__(self, client: Any) -> None:
        self._client = client
        self.containers = CountingContainers(client.containers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def counted(docker_client):
    client = CountingClient(docker_client)
    engine = LocalTarget(
        client,
        port=free_port(),
        name_prefix=f"kiln-test-first-{free_port()}",
        timeout=60,
        candidate_port=free_port,
        stop_timeout=5,
    )
    yield engine, client.containers
    engine.stop_all()


def stable_port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("old_server", ["oldest takes all", "from before"])
def test_a_first_deploy_starts_one_container_and_a_redeploy_one_more_or_a_candidate_first(
    store: ArtifactStore,
    counted: tuple[LocalTarget, CountingContainers],
    make_image: ImageMaker,
    old_server: str,
) -> None:
    engine, containers = counted
    steers = old_server == "oldest takes all"
    first, first_image = make_image("a", oldest_takes_all=steers)
    second, second_image = make_image("b")

    roll_out(store, first, engine, image=first_image)

    assert containers.created == [f"{engine.name_prefix}-{first[:12]}"]
    assert version_on(engine.endpoint) == first
    assert [(c.version, c.role, c.status) for c in engine.containers()] == [
        (first, CURRENT, "running")
    ]
    assert store.deployment(LOCAL).current == first

    containers.created.clear()
    roll_out(store, second, engine, image=second_image)

    if steers:  # beside a server that keeps the port's clients: the new one alone
        assert containers.created == [f"{engine.name_prefix}-{second[:12]}"]
    else:  # beside one that would share them: the candidate on its own port first
        assert containers.created == [
            f"{engine.name_prefix}-{second[:12]}-candidate",
            f"{engine.name_prefix}-{second[:12]}",
        ]
    assert version_on(engine.endpoint) == second
    assert [(c.version, c.status) for c in engine.containers()] == [(second, "running")]


def test_a_first_deploy_that_exits_while_starting_is_removed_and_reported(
    store: ArtifactStore, counted: tuple[LocalTarget, CountingContainers], make_image: ImageMaker
) -> None:
    engine, containers = counted
    broken, broken_image = make_image("broken", break_sha=True)

    with pytest.raises(RolloutError) as caught:
        roll_out(store, broken, engine, image=broken_image)

    message = str(caught.value)
    assert "exited with code 3" in message
    assert "refusing to start" in message  # the container's own last lines
    assert containers.created == [f"{engine.name_prefix}-{broken[:12]}"]
    assert engine.containers() == []
    assert stable_port_free(engine.port)
    record = store.deployment(LOCAL)
    assert record is None or record.current != broken


def test_a_first_deploy_failing_its_smoke_test_is_removed_and_the_next_one_lands(
    store: ArtifactStore, counted: tuple[LocalTarget, CountingContainers], make_image: ImageMaker
) -> None:
    engine, _ = counted
    liar, liar_image = make_image("liar", report="not-the-version")
    good, good_image = make_image("good")

    with pytest.raises(RolloutError, match="reports version 'not-the-version'"):
        roll_out(store, liar, engine, image=liar_image)
    assert engine.containers() == []
    assert stable_port_free(engine.port)

    roll_out(store, good, engine, image=good_image)
    assert version_on(engine.endpoint) == good
    assert [(c.version, c.status) for c in engine.containers()] == [(good, "running")]
