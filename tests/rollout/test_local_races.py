"""The local target under races: two deploys at once, a stable port someone else holds.

Real containers on the engine (marked e2e), with the stand-in images of
tests/rollout/test_local.py.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from kiln.config.errors import RolloutError
from kiln.rollout import LOCAL, roll_out
from kiln.rollout.local import CURRENT, LocalTarget
from kiln.store.artifact_store import ArtifactStore
from tests.rollout import test_local as local_e2e
from tests.rollout.test_local import ImageMaker, version_on

# The real-engine fixtures of the local target's own tests.
docker_client = local_e2e.docker_client
engine = local_e2e.engine
make_image = local_e2e.make_image
store = local_e2e.store

pytestmark = pytest.mark.e2e


def test_a_stable_port_held_by_another_program_fails_fast_naming_it(
    store: ArtifactStore, engine: LocalTarget, make_image: ImageMaker
) -> None:
    version, image = make_image("a")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", engine.port))
        squatter.listen()
        started = time.monotonic()
        with pytest.raises(RolloutError) as caught:
            roll_out(store, version, engine, image=image)
        took = time.monotonic() - started
    message = str(caught.value)
    assert f"port {engine.port} on 127.0.0.1 is taken by a program that is not a kiln" in message
    assert "\n" not in message
    assert took < 10, f"took {took:.1f}s"
    assert engine.containers() == []  # no candidate was even started
    assert store.deployment(LOCAL) is None


def test_two_deploys_at_once_are_serialized_and_both_land(
    store: ArtifactStore, engine: LocalTarget, make_image: ImageMaker
) -> None:
    first, first_image = make_image("a")
    second, second_image = make_image("b")
    errors: list[BaseException] = []

    def deploy(version: str, image: str) -> None:
        try:
            roll_out(store, version, engine, image=image)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [
        threading.Thread(target=deploy, args=(first, first_image)),
        threading.Thread(target=deploy, args=(second, second_image)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    serving = version_on(engine.endpoint)
    assert serving in (first, second)
    running = [(c.version, c.role) for c in engine.containers() if c.status == "running"]
    assert running == [(serving, CURRENT)]
    record = store.deployment(LOCAL)
    assert record.current == serving and record.previous == ({first, second} - {serving}).pop()
