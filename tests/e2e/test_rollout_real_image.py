"""The local target with kiln's REAL serving images (marked e2e).

Two iris models are stored, built by kiln/images/build.py (the engine build publishes the
serving base, the second build appends a model layer in the registry, so the engine must
pull it by digest), and rolled out one after the other on podman. The broken image is
the good one with a wrong MODEL_SHA256 baked in: kiln's server refuses to start with it.
Containers publish on 127.0.0.1 ports 20000-20399 only.
"""

from __future__ import annotations

import contextlib
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.config.errors import RolloutError
from kiln.config.settings import get_settings
from kiln.images.build import BuildOptions, build_image
from kiln.images.registry import Registry
from kiln.rollout import LOCAL, pick_image, roll_out
from kiln.rollout.local import LocalTarget
from kiln.rollout.smoke import http_caller
from kiln.store.artifact_store import ArtifactStore
from tests.conftest import engine_client, free_port
from tests.rollout.test_local import Poller, Watcher
from tests.support.factories import iris_trained

pytestmark = pytest.mark.e2e

REGISTRY = "127.0.0.1:5000"
RUN = uuid.uuid4().hex[:8]
LABELS = {0: "setosa", 1: "versicolor", 2: "virginica"}
SAMPLE = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture(scope="module")
def docker_client():
    try:
        client = engine_client(timeout=300)
        client.ping()
    except Exception as err:
        pytest.skip(f"no container engine API (scripts/infra.sh up starts one): {err}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    try:
        urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=3).close()
    except OSError as err:
        pytest.skip(f"no registry on {REGISTRY} (scripts/infra.sh up starts one): {err}")
    with Registry(REGISTRY) as client:
        yield client


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def versions(store: ArtifactStore, registry: Registry, docker_client) -> list[str]:
    options = BuildOptions(
        registry=REGISTRY,
        repository=f"kiln-test/{RUN}/rollout",
        base_repository=f"kiln-test/{RUN}/rollout-base",
        base_image="python:3.11-slim",
    )
    out = []
    for seed, builder in ((42, "engine"), (7, "layer")):
        data, _, onnx_bytes = iris_trained(seed)
        version = store.put(
            onnx_bytes,
            LABELS,
            {
                "sample_input": SAMPLE,
                "feature_names": list(data.feature_names),
                "metrics": {"accuracy": 0.97},
            },
        )
        build_image(
            store,
            version,
            registry,
            BuildOptions(**{**options.__dict__, "builder": builder}),
            engine=lambda: docker_client,
            cache_dir=get_settings().wheel_cache_dir,
        )
        out.append(version)
    assert len(set(out)) == 2
    return out


@pytest.fixture(scope="module")
def broken_image(
    store: ArtifactStore, versions: list[str], docker_client, tmp_path_factory
) -> Iterator[str]:
    good = pick_image(store.image_refs(versions[0]), versions[0])
    context: Path = tmp_path_factory.mktemp("broken")
    (context / "Dockerfile").write_text(f"FROM {good}\nENV MODEL_SHA256={'0' * 64}\n")
    tag = f"localhost/kiln-test-broken:{RUN}"
    docker_client.images.build(path=str(context), tag=tag, rm=True)
    yield tag
    with contextlib.suppress(Exception):
        docker_client.images.remove(tag, force=True)


@pytest.fixture
def engine(docker_client) -> Iterator[LocalTarget]:
    engine = LocalTarget(
        docker_client,
        port=free_port(),
        name_prefix=f"kiln-test-{RUN}",
        timeout=120,
        candidate_port=free_port,
        poll_interval=0.2,
        stop_timeout=10,
        environment={"WORKERS": "1"},
    )
    yield engine
    engine.stop_all()


def test_real_images_roll_out_answer_and_a_broken_one_is_rolled_back(
    store: ArtifactStore,
    versions: list[str],
    broken_image: str,
    engine: LocalTarget,
) -> None:
    old, new = versions
    roll_out(store, old, engine)
    with Poller(engine.endpoint) as poller:  # kiln's gunicorn drains: nothing refused
        result = roll_out(store, new, engine)
    failed = [outcome for outcome in poller.outcomes if outcome != 200]
    assert failed == [] and len(poller.outcomes) > 10, poller.outcomes

    call = http_caller(engine.endpoint)
    assert call("GET", "/metadata", None).json()["version"] == new
    answer = call("POST", "/predict", {"data": SAMPLE})
    assert answer.status == 200 and len(answer.json()["prediction"]) == 1
    assert result.previous_version == old

    with Watcher(engine.endpoint) as watcher, pytest.raises(RolloutError) as caught:
        roll_out(store, old, engine, image=broken_image)

    assert "before it was ready" in str(caught.value)
    assert "sha256" in str(caught.value)
    assert watcher.errors == [] and watcher.seen and set(watcher.seen) == {new}
    assert [c.version for c in engine.containers()] == [new]
    assert store.deployment(LOCAL).current == new
