"""The store commands through the real `kiln` entry point against SeaweedFS (s3:// store)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from kiln.store.artifact_store import ArtifactStore
from kiln.training.params import TrainParams
from kiln.training.sequence import run_training
from tests.conftest import free_port
from tests.support.factories import run_kiln
from tests.support.standin_image import BASE_IMAGE, build_standin_image


@pytest.fixture
def s3_store(seaweedfs) -> str:
    return f"s3://{seaweedfs.bucket}/cli-{uuid.uuid4().hex[:12]}"


def test_train_models_show_pin_prune_against_s3(s3_store, kiln_cli):
    trained = kiln_cli("train", store=s3_store)
    assert trained.returncode == 0, trained.stderr
    store = ArtifactStore(s3_store)
    [newest] = [v.version for v in store.list_versions()]
    assert f"stored version {newest}" in trained.stdout
    older = [run_training(store, TrainParams(seed=s)) for s in (1, 2)]
    assert len(store.list_versions()) == 3

    listed = json.loads(kiln_cli("models", "--json", store=s3_store).stdout)
    assert {row["version"] for row in listed} == {newest, *(r.version for r in older)}
    shown = kiln_cli("models", "show", newest[:6], store=s3_store)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["version"] == newest

    # created times have one-second resolution: make the order explicit
    for age, version in enumerate([newest, older[1].version, older[0].version]):
        path = f"{store.root}/versions/{version}/metadata.json"
        meta = json.loads(store.fs.cat_file(path))
        meta["created"] = f"2026-01-01T00:00:{59 - age:02d}Z"
        store.fs.pipe_file(path, json.dumps(meta).encode())
    pinned = kiln_cli("pin", older[0].version[:8], store=s3_store)
    assert pinned.returncode == 0, pinned.stderr
    pruned = kiln_cli("prune", "--keep", "1", store=s3_store)
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed {older[1].version}" in pruned.stdout
    assert {v.version for v in store.list_versions()} == {newest, older[0].version}
    assert json.loads(kiln_cli("models", "show", older[0].version, store=s3_store).stdout)["pinned"]


def test_an_unreachable_s3_store_is_one_line(s3_store, tmp_path):
    # One retry (KILN_RETRIES bounds S3 calls too): the same error, in a quarter of the time.
    env_endpoint = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "KILN_RETRIES": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "kiln.cli.app", "models", "--store", s3_store],
        capture_output=True,
        text=True,
        env={**os.environ, **env_endpoint},
        timeout=180,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: listing versions in store {s3_store}: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in result.stderr


def test_serve_runs_a_version_from_s3(s3_store, tmp_path):
    version = run_training(ArtifactStore(s3_store), TrainParams()).version
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (the server's lifetime)
    server = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli.app", "serve", version[:8], "--port", str(port)]
        + ["--workers", "1", "--store", s3_store],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "kiln serve never became ready"
            time.sleep(0.2)
        assert httpx.get(f"{base}/metadata").json()["version"] == version
        labels = httpx.post(f"{base}/predict/label", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
        assert labels.json() == {"prediction": ["setosa"]}
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        log.close()


def build_standin(client, store: ArtifactStore, name: str, workdir: Path) -> tuple[str, str]:
    """A stored version and a stand-in server image for it (tests/flows/standin)."""
    model = f"model {name} {uuid.uuid4().hex}".encode()
    version = store.put(model, {0: "a", 1: "b"}, {"sample_input": [[5.1, 3.5, 1.4, 0.2]]})
    tag = f"localhost/kiln-standin-s3:{name}-{uuid.uuid4().hex[:6]}"
    return version, build_standin_image(client, model, version, tag, workdir / f"ctx-{name}")


@pytest.mark.e2e
def test_deploy_status_rollback_record_in_s3(s3_store, tmp_path):
    from kiln.rollout.local import LocalTarget
    from tests.conftest import engine_client

    try:
        client = engine_client(timeout=120)
        client.images.get(BASE_IMAGE)
    except Exception as err:
        pytest.skip(f"no container engine or base image (scripts/infra.sh up): {err}")
    store = ArtifactStore(s3_store)
    old, old_image = build_standin(client, store, "a", tmp_path)
    new, new_image = build_standin(client, store, "b", tmp_path)
    port, name = free_port(), f"kiln-s3-{uuid.uuid4().hex[:6]}"
    env = {"KILN_LOCAL_PORT": str(port), "KILN_LOCAL_NAME": name, "KILN_TARGET": "local"}
    try:
        for version, image in ((old, old_image), (new, new_image)):
            shipped = run_kiln("deploy", version, "--image", image, store=s3_store, env=env)
            assert shipped.returncode == 0, shipped.stderr
        record = store.deployment("local")
        assert (record.current, record.previous) == (new, old)
        status = run_kiln("status", store=s3_store, env=env)
        assert f"recorded  {new} {new_image}" in status.stdout
        back = run_kiln("rollback", store=s3_store, env=env)
        assert back.returncode == 0, back.stderr
        assert f"rolled back to {old}" in back.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/metadata").json()["version"] == old
        assert store.deployment("local").current == old
    finally:
        LocalTarget(client, port=port, name_prefix=name).stop_all()
        for image in (old_image, new_image):
            with contextlib.suppress(Exception):
                client.images.remove(image, force=True)
        client.close()
