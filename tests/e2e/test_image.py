"""Real image builds: podman's Docker API, the local registry on 127.0.0.1:5000, real runs.

Each test module run uses its own repositories (model images and serving base), so nothing
depends on what an earlier run left in the registry; containers publish on 127.0.0.1 ports
19000-19999 only. The stopped-registry test uses a throwaway registry of its own.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from kiln.config.errors import BuildError, IntegrityError
from kiln.config.settings import get_settings
from kiln.images.build import BuildOptions, BuildResult, build_image
from kiln.images.registry import Registry
from kiln.images.retention import prune_versions
from kiln.infra.engine import run_infra
from kiln.infra.retry import RetryPolicy
from kiln.store.artifact_store import ArtifactStore
from tests.conftest import engine_client, free_port
from tests.support.factories import iris_trained

pytestmark = pytest.mark.e2e

REGISTRY = "127.0.0.1:5000"
LABELS = {0: "setosa", 1: "versicolor", 2: "virginica"}
SAMPLE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
RUN = uuid.uuid4().hex[:8]


def _registry_up(host: str) -> bool:
    try:
        return httpx.get(f"http://{host}/v2/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    if not _registry_up(REGISTRY):
        run_infra("up")
    assert _registry_up(REGISTRY), "local registry not reachable; run scripts/infra.sh up"
    with Registry(REGISTRY) as client:
        yield client


@pytest.fixture(scope="module")
def engine():
    client = engine_client(timeout=300)
    client.ping()
    yield client
    client.close()


def _put_model(store: ArtifactStore, seed: int) -> str:
    data, _, onnx_bytes = iris_trained(seed)
    return store.put(
        onnx_bytes,
        LABELS,
        {
            "metrics": {"accuracy": 0.97},
            "sample_input": SAMPLE[:1],
            "feature_names": list(data.feature_names),
            "code_revision": "test",
        },
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def version(store) -> str:
    return _put_model(store, seed=42)


@pytest.fixture(scope="module")
def options() -> BuildOptions:
    return BuildOptions(
        registry=REGISTRY,
        repository=f"kiln-test/{RUN}/engine",
        base_repository=f"kiln-test/{RUN}/base",
        base_image="python:3.11-slim",
        name="wine",  # every image here carries this name
    )


@pytest.fixture(scope="module")
def engine_result(store, version, registry, engine, options) -> BuildResult:
    """One engine build per module run: it also publishes the serving base (fresh repo)."""
    return build_image(
        store,
        version,
        registry,
        _with(options, builder="engine"),
        engine=lambda: engine,
        cache_dir=get_settings().wheel_cache_dir,
    )


@pytest.fixture(scope="module")
def layer_result(engine_result, store, version, registry, options) -> BuildResult:
    layer_options = _with(options, builder="layer", repository=f"kiln-test/{RUN}/layer")
    return build_image(store, version, registry, layer_options, engine=_no_engine)


def _with(options: BuildOptions, **changes) -> BuildOptions:
    return BuildOptions(**{**options.__dict__, **changes})


def _no_engine():
    raise AssertionError("the container engine must not be used here")


@contextlib.contextmanager
def _serving(engine, image: str) -> Iterator[str]:
    port = free_port()
    container = engine.containers.run(
        image,
        detach=True,
        name=f"kiln-test-{RUN}-{uuid.uuid4().hex[:6]}",
        environment={"WORKERS": "1"},
        ports={"8000/tcp": ("127.0.0.1", port)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            container.reload()
            if container.status == "exited" or time.monotonic() > deadline:
                logs = container.logs().decode(errors="replace")[-2000:]
                raise AssertionError(f"{image} did not answer: {container.status}\n{logs}")
            time.sleep(0.3)
        yield url
    finally:
        container.remove(force=True)


def _check_serves(engine, result: BuildResult, store, version, name: str = "wine") -> list:
    """Run the image: it reports its version, model and name (MODEL_NAME, baked in) on
    /metadata, V2 and every metric, and answers the sample."""
    meta = store.metadata(version)
    with _serving(engine, result.image) as url:
        metadata = httpx.get(f"{url}/metadata", timeout=5).json()
        assert metadata["version"] == version
        assert metadata["sha256"] == meta["model_sha256"]
        assert metadata["name"] == name
        assert httpx.get(f"{url}/v2/models/{name}", timeout=5).json()["name"] == name
        answer = httpx.post(f"{url}/predict", json={"data": SAMPLE}, timeout=5)
        assert answer.status_code == 200, answer.text
        text = httpx.get(f"{url}/metrics", timeout=5).text
        samples = [line for line in text.splitlines() if line.startswith("kiln_")]
        assert samples and all(f'model="{name}"' in line for line in samples), text
        return answer.json()["prediction"]


def _config(registry: Registry, result: BuildResult) -> dict:
    repository = result.image.split("/", 1)[1].split("@")[0]
    manifest, _, _ = registry.manifest(repository, result.digest)
    return json.loads(registry.blob(repository, manifest["config"]["digest"]))["config"]


def test_engine_build_pushes_runs_and_answers(engine_result, engine, store, version, registry):
    assert engine_result.builder == "engine"
    assert engine_result.image.startswith(f"{REGISTRY}/kiln-test/{RUN}/engine@sha256:")
    assert registry.manifest_digest(f"kiln-test/{RUN}/engine", version) == engine_result.digest
    assert engine_result.image in store.image_refs(version)
    prediction = _check_serves(engine, engine_result, store, version)
    assert len(prediction) == 2 and prediction[0][0] > 0.5 and prediction[1][2] > 0.5


def test_layer_build_appends_only_the_model(
    layer_result, engine_result, store, version, model_size
):
    assert layer_result.builder == "layer"
    assert layer_result.bytes_pushed <= model_size + 16 * 1024
    assert layer_result.seconds < engine_result.seconds
    assert layer_result.image in store.image_refs(version)


@pytest.fixture(scope="module")
def model_size(store, version) -> int:
    return len(store.get(version).model_bytes)


def test_both_builders_images_behave_the_same(
    layer_result, engine_result, engine, store, version, registry
):
    from_layer = _check_serves(engine, layer_result, store, version)
    from_engine = _check_serves(engine, engine_result, store, version)
    assert from_layer == from_engine

    a, b = _config(registry, layer_result), _config(registry, engine_result)
    assert "MODEL_NAME=wine" in a["Env"] and a["Labels"]["io.kiln.model"] == "wine"
    for key in ("Entrypoint", "Cmd", "User", "WorkingDir", "StopSignal", "ExposedPorts"):
        assert a.get(key) == b.get(key), key
    assert sorted(a["Env"]) == sorted(b["Env"])
    labels_a = {k: v for k, v in a["Labels"].items() if not k.startswith("io.buildah")}
    labels_b = {k: v for k, v in b["Labels"].items() if not k.startswith("io.buildah")}
    assert labels_a == labels_b


def test_two_builds_of_one_model_give_one_digest(
    layer_result, engine_result, store, version, registry, engine, options
):
    again = build_image(
        store, version, registry, _with(options, builder="engine"), engine=_no_engine
    )
    assert (again.digest, again.builder, again.bytes_pushed) == (
        engine_result.digest,
        "registry",
        0,
    )
    layer_options = _with(options, builder="layer", repository=f"kiln-test/{RUN}/layer")
    rebuilt = build_image(store, version, registry, _with(layer_options, force=True))
    assert rebuilt.builder == "layer" and rebuilt.digest == layer_result.digest


def test_auto_appends_a_layer_when_the_base_is_there(engine_result, store, registry, options):
    other = _put_model(store, seed=7)
    result = build_image(store, other, registry, _with(options, builder="auto"), engine=_no_engine)
    assert result.builder == "layer"
    assert result.version == other


def test_tampered_model_is_refused_before_any_build(tmp_path, version, store, registry, options):
    copy_root = tmp_path / "store"
    shutil.copytree(store.root, copy_root)
    model = copy_root / "versions" / version / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    target = _with(options, repository=f"kiln-test/{RUN}/tampered")
    with pytest.raises(IntegrityError, match="model.onnx"):
        build_image(ArtifactStore(copy_root), version, registry, target, engine=_no_engine)
    assert registry.manifest_digest(target.repository, version) is None


@pytest.fixture
def throwaway_registry(tmp_path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A registry of this test's own (never the shared one); the test stops it."""
    port = free_port()
    host = f"127.0.0.1:{port}"
    config = tmp_path / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {tmp_path / 'data'}\nhttp:\n  addr: {host}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _registry_up(host):
            assert time.monotonic() < deadline, "throwaway registry did not start"
            time.sleep(0.1)
        yield host, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


@pytest.mark.parametrize("builder", ["layer", "engine"])
def test_stopped_registry_retries_then_fails_clearly(
    throwaway_registry, builder, store, version, caplog, options
):
    host, proc = throwaway_registry
    proc.terminate()
    proc.wait(10)
    assert not _registry_up(host)
    opts = _with(options, registry=host, builder=builder, repository=f"kiln-test/{RUN}/stop")
    policy = RetryPolicy(attempts=3, first_delay=0.1, factor=2)
    started = time.monotonic()
    with Registry(host, retry=policy) as client, pytest.raises(BuildError) as err:
        build_image(store, version, client, opts, engine=_no_engine)
    message = str(err.value)
    assert "after 3 attempts" in message and "registry unreachable" in message
    assert host in message
    assert time.monotonic() - started >= 0.3  # backed off 0.1 + 0.2
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


def test_retention_deletes_pruned_images_by_digest_but_never_deployed_or_base(
    engine_result, registry, options, tmp_path
):
    ticks = iter(range(1, 100))  # distinct `created` seconds, so "newest" is well defined
    store = ArtifactStore(
        tmp_path / "retention", clock=lambda: datetime(2026, 1, 1, 0, 0, next(ticks), tzinfo=UTC)
    )
    repo = f"kiln-test/{RUN}/retention"
    opts = _with(options, builder="layer", repository=repo)
    built = {}
    for seed in (1, 2, 3):  # created in this order: 3 is the newest
        v = _put_model(store, seed)
        built[seed] = build_image(store, v, registry, opts)
    store.record_deployment("local", built[1].version, built[1].image)
    pruned = prune_versions(
        store, keep=1, registry=registry, base_repositories=[options.base_repository]
    )
    result, retention = pruned.versions, pruned.images
    assert [i.version for i in result.removed] == [built[2].version]
    assert retention.deleted == [built[2].image]
    assert registry.manifest_digest(repo, built[2].digest) is None
    assert registry.manifest_digest(repo, built[1].digest) == built[1].digest  # deployed
    assert registry.manifest_digest(repo, built[3].digest) == built[3].digest  # newest
    for tag in registry.tags(options.base_repository):  # the serving base is untouched
        assert registry.manifest_digest(options.base_repository, tag)


def test_kiln_build_prints_the_digest_reference(engine_result, store, options):
    from typer.testing import CliRunner

    from kiln.cli.app import app

    other = _put_model(store, seed=11)
    result = CliRunner().invoke(
        app,
        [
            "build",
            other,
            "--builder",
            "layer",
            "--store",
            store.url,
            "--repository",
            f"kiln-test/{RUN}/cli",
            "--base-repository",
            options.base_repository,
        ],
    )
    assert result.exit_code == 0, result.output
    ref, summary = result.output.strip().splitlines()[-2:]
    assert ref.startswith(f"{REGISTRY}/kiln-test/{RUN}/cli/model@sha256:")  # the default name
    assert summary.startswith("builder layer, ") and "bytes pushed" in summary
    assert store.image_refs(other) == [ref]


def test_each_name_gets_its_own_repository_and_image(
    engine_result, engine, store, registry, options
):
    """One version under two names: `<KILN_REPOSITORY>/<name>` each, each image carrying
    its name; a name's rollout and rebuild take only its own repository's image."""
    from kiln import wiring
    from kiln.config.settings import KilnSettings
    from kiln.rollout import pick_image

    version = _put_model(store, seed=13)
    prefix = f"kiln-test/{RUN}/names"
    settings = KilnSettings(
        registry=REGISTRY, repository=prefix, base_repository=options.base_repository
    )
    built = {}
    for name in ("wine", "rose"):
        named = _with(wiring.build_options(settings, name=name), builder="layer")
        built[name] = build_image(store, version, registry, named, engine=_no_engine)
        assert built[name].image.startswith(f"{REGISTRY}/{prefix}/{name}@sha256:")
        config = _config(registry, built[name])
        assert f"MODEL_NAME={name}" in config["Env"]
        assert config["Labels"]["io.kiln.model"] == name
    assert built["wine"].digest != built["rose"].digest  # the name is part of the image
    refs = store.image_refs(version)
    assert pick_image(refs, version, f"{prefix}/wine") == built["wine"].image
    assert pick_image(refs, version, f"{prefix}/rose") == built["rose"].image
    again = build_image(
        store, version, registry, wiring.build_options(settings, name="rose"), engine=_no_engine
    )
    assert (again.builder, again.image) == ("registry", built["rose"].image)
    _check_serves(engine, built["rose"], store, version, name="rose")
