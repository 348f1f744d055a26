"""Fast unit tests for the pure parts of the image builders: tar, config, manifest, retries."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
import requests

from kiln.config.errors import BuildError
from kiln.images.builders.engine import check_stream
from kiln.images.contents import (
    LABEL_BASE_KEY,
    LABEL_MODEL_NAME,
    LABEL_MODEL_SHA,
    ModelImageSpec,
    image_spec,
    model_image,
    model_layer,
    source_epoch,
)
from kiln.images.oci import (
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_LAYER,
    OCI_MANIFEST,
    Image,
    NotAnImage,
    canonical_json,
    deterministic_tar,
    gzip_deterministic,
    sha256_digest,
)
from kiln.images.registry import RegistryError, registry_call, split_reference
from kiln.images.serving_base import base_key
from kiln.infra.retry import RetryPolicy

SPEC = ModelImageSpec(
    version="abc123def456",
    model_sha256="f" * 64,
    created="2026-01-02T03:04:05Z",
    revision="rev1",
    source="kiln",
    base_key="base-0123456789abcdef",
    name="wine",
)


def _model_dir(tmp_path: Path, model: bytes = b"onnx-bytes") -> Path:
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    (d / "model.onnx").write_bytes(model)
    (d / "labels.json").write_text('{"0": "setosa"}\n')
    (d / "metadata.json").write_text('{"version": "abc123def456"}\n')
    return d


def test_tar_is_sorted_with_fixed_metadata_whatever_the_input_order():
    a = deterministic_tar({"models/b": b"2", "models/a": b"1"}, mtime=42)
    b = deterministic_tar({"models/a": b"1", "models/b": b"2"}, mtime=42)
    assert a == b
    with tarfile.open(fileobj=io.BytesIO(a)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["models", "models/a", "models/b"]
    assert members[0].isdir() and members[0].mode == 0o755
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (42, 0, 0, "", "")
    assert all(m.mode == 0o644 for m in members[1:])


def test_tar_changes_with_mtime_and_content():
    base = deterministic_tar({"models/a": b"1"}, mtime=1)
    assert deterministic_tar({"models/a": b"1"}, mtime=2) != base
    assert deterministic_tar({"models/a": b"x"}, mtime=1) != base


def test_gzip_is_deterministic_and_round_trips():
    data = b"hello" * 1000
    assert gzip_deterministic(data) == gzip_deterministic(data)
    assert gzip.decompress(gzip_deterministic(data)) == data


def test_model_layer_digests(tmp_path):
    layer = model_layer(_model_dir(tmp_path), mtime=100)
    again = model_layer(_model_dir(tmp_path), mtime=100)
    assert layer == again
    assert layer.digest == sha256_digest(layer.blob)
    assert layer.diff_id == sha256_digest(layer.tar)
    with tarfile.open(fileobj=io.BytesIO(layer.tar)) as tar:
        assert tar.getnames() == [
            "models",
            "models/labels.json",
            "models/metadata.json",
            "models/model.onnx",
        ]
    other = model_layer(_model_dir(tmp_path, b"other-model"), mtime=100)
    assert other.digest != layer.digest


def test_model_layer_needs_all_three_files(tmp_path):
    d = _model_dir(tmp_path)
    (d / "labels.json").unlink()
    with pytest.raises(BuildError, match="labels.json"):
        model_layer(d, mtime=0)


def test_source_date_epoch_wins_over_the_model_creation_time():
    assert source_epoch("2026-01-02T03:04:05Z", {}) == 1767323045
    assert source_epoch("2026-01-02T03:04:05Z", {"SOURCE_DATE_EPOCH": "10"}) == 10
    with pytest.raises(BuildError, match="SOURCE_DATE_EPOCH"):
        source_epoch("", {"SOURCE_DATE_EPOCH": "soon"})


def test_image_spec_from_metadata_is_stable():
    meta = {
        "version": "v1",
        "model_sha256": "a" * 64,
        "created": "2026-01-02T03:04:05Z",
        "code_revision": "deadbeef",
    }
    spec = image_spec(meta, "base-x", source="src", environ={})
    assert spec.created == "2026-01-02T03:04:05Z"
    assert spec.name == "model"  # the default name
    assert image_spec(meta, "base-x", name="wine", environ={}).env()["MODEL_NAME"] == "wine"
    assert spec.revision == "deadbeef"
    assert spec == image_spec(meta, "base-x", source="src", environ={})
    assert image_spec(meta, "base-x", environ={"SOURCE_DATE_EPOCH": "0"}).created == (
        "1970-01-01T00:00:00Z"
    )


BASE_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "x", "size": 1},
    "layers": [],
}
BASE_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2025-01-01T00:00:00Z",
    "config": {
        "Env": ["PATH=/opt/venv/bin:/usr/bin", "MODEL_VERSION=stale"],
        "Entrypoint": ["gunicorn", "-c", "python:serving.gunicorn_conf"],
        "User": "10001:10001",
        "Labels": {"io.buildah.version": "1.28.2"},
    },
    "rootfs": {"type": "layers", "diff_ids": ["sha256:aaa", "sha256:bbb"]},
    "history": [{"created_by": "base"}],
}


def test_model_image_adds_env_labels_layer_and_leaves_the_base_alone(tmp_path):
    before = json.loads(json.dumps(BASE_CONFIG))
    layer = model_layer(_model_dir(tmp_path), mtime=0)
    base = Image(BASE_MANIFEST, BASE_CONFIG)
    image = model_image(base, layer, SPEC)
    cfg = image.config
    assert before == BASE_CONFIG and base.config == BASE_CONFIG  # pure: the input is untouched
    assert base.blobs == {} and image.blobs == {layer.digest: layer.blob}
    env = cfg["config"]["Env"]
    assert env[0] == "PATH=/opt/venv/bin:/usr/bin"
    assert "MODEL_VERSION=abc123def456" in env and "MODEL_VERSION=stale" not in env
    assert "MODEL_FILEPATH=/models/model.onnx" in env
    assert "LABEL_FILEPATH=/models/labels.json" in env
    assert f"MODEL_SHA256={'f' * 64}" in env
    assert "MODEL_NAME=wine" in env
    labels = cfg["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "abc123def456"
    assert labels["org.opencontainers.image.created"] == SPEC.created
    assert labels[LABEL_MODEL_SHA] == "f" * 64
    assert labels[LABEL_BASE_KEY] == SPEC.base_key
    assert LABEL_MODEL_NAME == "io.kiln.model" and labels[LABEL_MODEL_NAME] == "wine"
    assert labels["io.buildah.version"] == "1.28.2"
    assert cfg["rootfs"]["diff_ids"] == ["sha256:aaa", "sha256:bbb", layer.diff_id]
    assert len(cfg["history"]) == 2 and cfg["created"] == SPEC.created
    assert cfg["config"]["Entrypoint"] == BASE_CONFIG["config"]["Entrypoint"]
    assert canonical_json(cfg) == canonical_json(model_image(base, layer, SPEC).config)
    assert image.config_bytes() == canonical_json(cfg)


@pytest.mark.parametrize(
    ("media_type", "layer_type"), [(OCI_MANIFEST, OCI_LAYER), (DOCKER_MANIFEST, DOCKER_LAYER)]
)
def test_model_image_manifest(tmp_path, media_type, layer_type):
    base = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/x-config", "digest": "sha256:c", "size": 3},
        "layers": [{"mediaType": layer_type, "digest": "sha256:l1", "size": 10}],
    }
    layer = model_layer(_model_dir(tmp_path), mtime=0)
    image = model_image(Image(base, BASE_CONFIG), layer, SPEC)
    raw, got_type = image.manifest_bytes(), image.media_type
    manifest = json.loads(raw)
    assert got_type == media_type
    assert manifest["config"] == {
        "mediaType": "application/x-config",
        "digest": sha256_digest(image.config_bytes()),
        "size": len(image.config_bytes()),
    }
    assert manifest["layers"][0] == base["layers"][0]
    assert manifest["layers"][1] == {
        "mediaType": layer_type,
        "digest": layer.digest,
        "size": len(layer.blob),
    }
    assert raw == model_image(Image(base, BASE_CONFIG), layer, SPEC).manifest_bytes()
    assert image.digest == sha256_digest(raw)
    assert base["layers"] == [{"mediaType": layer_type, "digest": "sha256:l1", "size": 10}]


def test_an_index_is_not_an_image():
    index = {"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    with pytest.raises(NotAnImage, match="single image"):
        Image(index, {})


def test_base_key_follows_server_code_and_dependencies(tmp_path):
    serving = tmp_path / "serving"
    serving.mkdir()
    (serving / "app.py").write_text("app = 1\n")
    (serving / "__pycache__").mkdir()
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM x\n")

    def key(**kw):
        args = {
            "base_image": "python:3.11-slim",
            "dockerfile": dockerfile,
            "serving_dir": serving,
            "requirements": ["numpy"],
        }
        args.update(kw)
        return base_key(**args)

    first = key()
    assert first.startswith("base-") and len(first) == 21
    (serving / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"noise")
    assert key() == first
    assert key(requirements=["numpy", "orjson"]) != first
    assert key(base_image="python:3.12-slim") != first
    (serving / "app.py").write_text("app = 2\n")
    assert key() != first


def test_engine_stream_errors_fail_with_their_message():
    ok = [{"stream": "Step 1/2"}, {"status": "Pushed"}]
    assert check_stream("building x", ok) == ok
    bad = [{"status": "Pushing"}, {"errorDetail": {"message": "http: server gave HTTP response"}}]
    with pytest.raises(BuildError, match="pushing x: http: server gave HTTP response"):
        check_stream("pushing x", iter(bad))
    with pytest.raises(BuildError, match="no space left"):
        check_stream("building x", [{"error": "no space left"}])


def test_split_reference():
    assert split_reference("127.0.0.1:5000/kiln/iris:v1") == ("127.0.0.1:5000", "kiln/iris", "v1")
    assert split_reference("127.0.0.1:5000/kiln/iris@sha256:ab") == (
        "127.0.0.1:5000",
        "kiln/iris",
        "sha256:ab",
    )
    assert split_reference("127.0.0.1:5000/kiln/iris")[2] == "latest"


def test_retries_are_bounded_with_backoff_and_the_error_is_clear():
    sleeps: list[float] = []
    calls = []

    def down():
        calls.append(1)
        raise requests.ConnectionError("refused")

    policy = RetryPolicy(attempts=4, first_delay=0.5, factor=2)
    with pytest.raises(RegistryError, match="pushing x after 4 attempts: registry unreachable"):
        registry_call("pushing x", down, policy, sleep=sleeps.append)
    assert len(calls) == 4 and sleeps == [0.5, 1.0, 2.0]


def test_non_transient_errors_are_not_retried():
    response = requests.Response()
    response.status_code = 400
    response._content = b'{"errors":[{"code":"MANIFEST_INVALID"}]}'
    calls = []

    def bad():
        calls.append(1)
        raise requests.HTTPError(response=response)

    with pytest.raises(RegistryError, match="HTTP 400 .*MANIFEST_INVALID"):
        registry_call("pushing x", bad, RetryPolicy(), sleep=lambda _: None)
    assert calls == [1]


def test_transient_failure_then_success():
    results = iter([requests.ConnectionError("x"), "ok"])

    def flaky():
        item = next(results)
        if isinstance(item, Exception):
            raise item
        return item

    assert registry_call("x", flaky, RetryPolicy(), sleep=lambda _: None) == "ok"


def test_engine_host_resolution(tmp_path, monkeypatch):
    from kiln import wiring
    from kiln.config.settings import KilnSettings
    from kiln.infra.engine import containers_env

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert wiring.engine_host(KilnSettings(state_dir=tmp_path)) == "tcp://127.0.0.1:2375"
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.delenv("KILN_STATE_DIR", raising=False)
    assert wiring.engine_host(KilnSettings(state_dir=tmp_path)) == f"unix://{tmp_path}/podman.sock"
    assert wiring.engine_host(KilnSettings()) == "unix:///var/lib/kiln/podman.sock"
    assert "CONTAINERS_CONF" not in containers_env(tmp_path, {})
    (tmp_path / "containers.conf").write_text("")
    env = containers_env(tmp_path, {})
    assert env["CONTAINERS_CONF"] == str(tmp_path / "containers.conf")
    assert containers_env(tmp_path, {"CONTAINERS_CONF": "/x"})["CONTAINERS_CONF"] == "/x"
