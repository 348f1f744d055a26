"""The store contract, on a local folder, fsspec's memory filesystem and a real S3 server.

The S3 cases run against SeaweedFS (the session's `seaweedfs` fixture), each under a
prefix of its own; the fixtures are in conftest.py.
"""

import contextlib
import hashlib
import json
import multiprocessing
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from kiln import wiring
from kiln.config.errors import IntegrityError, StoreError, VersionNotFound
from kiln.config.settings import KilnSettings
from kiln.store.artifact_store import ArtifactStore
from tests.support.stores import files_under

LABELS = {0: "setosa", 1: "versicolor", 2: "virginica"}


def put(store: ArtifactStore, model: bytes, **meta) -> str:
    return store.put(model, LABELS, {"metrics": {"accuracy": 1.0}, **meta})


def set_created(store: ArtifactStore, version: str, created: str) -> None:
    path = f"{store.root}/versions/{version}/metadata.json"
    meta = json.loads(store.fs.cat_file(path))
    meta["created"] = created
    store.fs.pipe_file(path, json.dumps(meta).encode())


def test_put_then_get_round_trips_and_records_hashes(store):
    version = put(store, b"model-bytes")
    stored = store.get(version)
    assert stored.model_bytes == b"model-bytes"
    assert stored.labels == {"0": "setosa", "1": "versicolor", "2": "virginica"}
    assert stored.metadata["version"] == version
    assert stored.metadata["model_sha256"] == hashlib.sha256(b"model-bytes").hexdigest()
    assert stored.metadata["created"].endswith("Z")


def test_same_model_twice_is_one_version(store):
    first = put(store, b"same")
    second = put(store, b"same", note="stored again")
    assert first == second
    assert [v.version for v in store.list_versions()] == [first]
    assert "note" not in store.get(first).metadata  # the first write stands
    assert put(store, b"other") != first


def test_versions_resolve_by_prefix_and_latest(store):
    version = put(store, b"one")
    assert store.resolve(version[:5]) == version
    assert store.resolve("latest") == version
    with pytest.raises(VersionNotFound, match="no version 'zzz'"):
        store.get("zzz")


def test_tampered_files_are_refused(store, tmp_path):
    version = put(store, b"model")
    directory = f"{store.root}/versions/{version}"
    store.fs.pipe_file(f"{directory}/model.onnx", b"mod3l")
    with pytest.raises(IntegrityError, match=rf"version {version}: model.onnx has sha256"):
        store.get(version)
    with pytest.raises(IntegrityError):
        store.export_version(version, tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()
    store.fs.pipe_file(f"{directory}/model.onnx", b"model")
    store.fs.pipe_file(f"{directory}/labels.json", b'{"0": "x"}')
    with pytest.raises(IntegrityError, match="labels.json"):
        store.get(version)
    store.fs.rm_file(f"{directory}/labels.json")
    with pytest.raises(IntegrityError, match="labels.json is missing"):
        store.get(version)


def test_export_version_writes_the_three_files(store, tmp_path):
    version = put(store, b"model")
    out = store.export_version(version, tmp_path / "out")
    assert (out / "model.onnx").read_bytes() == b"model"
    assert json.loads((out / "labels.json").read_text())["2"] == "virginica"
    assert json.loads((out / "metadata.json").read_text())["version"] == version


def test_images_pins_and_deployments(store):
    one, two, three = (put(store, m) for m in (b"1", b"2", b"3"))
    store.record_image(one, "127.0.0.1:5000/kiln/iris@sha256:aa")
    assert store.image_refs(one) == ["127.0.0.1:5000/kiln/iris@sha256:aa"]
    store.pin(two)
    assert store.pinned() == [two]
    first = store.record_deployment("local", one, "img-1")
    assert (first.current, first.previous) == (one, None)
    second = store.record_deployment("local", three, "img-3")
    assert (second.current, second.previous, second.previous_image) == (three, one, "img-1")
    # redeploying the current version keeps the rollback target
    again = store.record_deployment("local", three, "img-3")
    assert again.previous == one
    store.restore_deployment("local", first)
    assert store.deployment("local").current == one
    with pytest.raises(StoreError, match="invalid target"):
        store.deployment("../etc")


def test_prune_keeps_newest_pinned_deployed_and_rollback(store):
    versions = [put(store, f"m{i}".encode()) for i in range(7)]
    # created times have one-second resolution: order them explicitly, oldest first
    for age, version in enumerate(reversed(versions)):
        set_created(store, version, f"2026-01-01T00:00:{59 - age:02d}Z")
    oldest, second_oldest, third_oldest = versions[0], versions[1], versions[2]
    store.pin(oldest)
    store.record_deployment("prod", second_oldest, "i2")
    store.record_deployment("prod", third_oldest, "i3")  # second_oldest becomes rollback target

    planned = store.prune(keep=2, dry_run=True)
    assert len(store.list_versions()) == 7  # dry run removes nothing
    result = store.prune(keep=2)
    assert {i.version for i in result.removed} == {i.version for i in planned.removed}
    remaining = {v.version for v in store.list_versions()}
    assert remaining == {versions[6], versions[5], oldest, second_oldest, third_oldest}
    for info in result.removed:
        assert files_under(store, f"versions/{info.version}") == []
        with pytest.raises(VersionNotFound):
            store.get(info.version)
    if store._local:
        assert not [p for p in Path(store.root, "versions").iterdir() if p.name.startswith(".")]
    with pytest.raises(StoreError, match="keep must be at least 1"):
        store.prune(keep=0)
    with pytest.raises(StoreError, match=f"version {oldest} is pinned, deployed or a rollback"):
        store.remove_version(oldest)


KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import kiln.store.artifact_store as store_module

    stage, root, ready = sys.argv[1], sys.argv[2], sys.argv[3]
    store = store_module.ArtifactStore(root)

    def hang():
        open(ready, "w").close()
        time.sleep(600)

    if store._local:
        real_fsync, real_rename = os.fsync, os.rename
        calls = {"fsync": 0}

        def fsync(fd):
            calls["fsync"] += 1
            real_fsync(fd)
            if stage == "after-first-file" and calls["fsync"] == 1:
                hang()

        def rename(src, dst, **dir_fds):
            if stage == "before-commit":
                hang()
            real_rename(src, dst, **dir_fds)

        store_module.os.fsync = fsync
        store_module.os.rename = rename
    else:
        real_pipe, real_write_if = store.fs.pipe_file, store_module.store_s3.write_if

        def pipe_file(path, data, **kwargs):
            real_pipe(path, data, **kwargs)
            if stage == "after-first-file":
                hang()

        def write_if(*args):
            if stage == "before-commit":
                hang()
            return real_write_if(*args)

        store.fs.pipe_file = pipe_file
        store_module.store_s3.write_if = write_if
    store.put(b"x" * 1_000_000, {0: "a", 1: "b"}, {})
    """
)


@pytest.mark.parametrize("stage", ["after-first-file", "before-commit"])
def test_writer_killed_midway_leaves_no_partial_version(shared_url, tmp_path, stage):
    ready = tmp_path / "ready"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, stage, shared_url, str(ready)])
    try:
        for _ in range(600):
            if ready.exists() or writer.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), "the writer never reached the point where it is killed"
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    finally:
        writer.kill()
    store = ArtifactStore(shared_url)
    assert store.list_versions() == []
    with pytest.raises(VersionNotFound):
        store.get("latest")
    leftovers = files_under(store, "versions")
    assert leftovers
    if store._local:  # staged beside the versions, never renamed in
        assert all("/.staging-" in name for name in leftovers)
    else:  # written in place, never committed
        assert not [name for name in leftovers if name.endswith("/metadata.json")]
    # stale leftovers are cleaned (a young one is spared: its writer may be at work) ...
    assert store.clean_staging(older_than_seconds=3600) == []
    assert len(store.clean_staging(older_than_seconds=0)) == 1
    assert files_under(store, "versions") == []
    # ... and a later writer stores the same model whole
    version = store.put(b"x" * 1_000_000, {0: "a", 1: "b"}, {})
    assert store.get(version).model_bytes == b"x" * 1_000_000


WRITERS = 4  # processes, like workers on several machines


def _store_many(root: str, seed: int) -> list[str]:
    store = ArtifactStore(root)
    # every writer stores one shared model and a few of its own
    models = [b"shared-model"] + [f"model-{seed}-{i}".encode() * 1000 for i in range(4)]
    return [store.put(m, {0: "a", 1: "b"}, {"writer": seed}) for m in models]


def test_concurrent_writers_lose_nothing(shared_url):
    with multiprocessing.get_context("spawn").Pool(WRITERS) as pool:
        results = pool.starmap(_store_many, [(shared_url, seed) for seed in range(WRITERS)])
    expected = {v for versions in results for v in versions}
    assert len(expected) == 1 + WRITERS * 4
    store = ArtifactStore(shared_url)
    assert {v.version for v in store.list_versions()} == expected
    for version in expected:
        store.get(version)  # every version reads back whole and verified
    if store._local:
        assert not [p for p in Path(shared_url, "versions").iterdir() if p.name.startswith(".")]


def _at(start: float) -> None:
    time.sleep(max(0.0, start - time.time()))


def _put_same_model(root: str, writer: int, start: float) -> tuple[str, str]:
    store = ArtifactStore(root)
    _at(start)
    version = store.put(b"one model" * 10_000, {0: "a", 1: "b"}, {"writer": writer})
    return version, store.get(version).metadata["created"]


def test_writers_of_one_model_converge_on_one_version(shared_url):
    start = time.time() + 4  # every process has imported and opened the store by then
    with multiprocessing.get_context("spawn").Pool(WRITERS) as pool:
        args = [(shared_url, w, start) for w in range(WRITERS)]
        results = pool.starmap(_put_same_model, args)
    store = ArtifactStore(shared_url)
    [info] = store.list_versions()
    assert {version for version, _ in results} == {info.version}
    stored = store.get(info.version)
    assert stored.metadata["writer"] in range(WRITERS)  # one writer's commit stands whole
    assert stored.model_bytes == b"one model" * 10_000


def _deploy(root: str, version: str, start: float) -> dict:
    store = ArtifactStore(root)
    _at(start)
    return store.record_deployment("prod", version, f"img-{version}").__dict__


def test_concurrent_rollouts_never_lose_a_deployment_record(shared_url):
    store = ArtifactStore(shared_url)
    initial = put(store, b"initial")
    store.record_deployment("prod", initial, f"img-{initial}")
    versions = [put(store, f"model {i}".encode()) for i in range(WRITERS)]
    start = time.time() + 4
    with multiprocessing.get_context("spawn").Pool(WRITERS) as pool:
        written = pool.starmap(_deploy, [(shared_url, v, start) for v in versions])
    # Every update saw the one before it: the records chain from the initial version
    # through all of them, with no two updates building on the same record.
    by_previous = {record["previous"]: record for record in written}
    assert len(by_previous) == len(written)
    chain, current = [], initial
    while current in by_previous:
        record = by_previous.pop(current)
        assert record["previous_image"] == f"img-{current}"
        chain.append(record["current"])
        current = record["current"]
    assert sorted(chain) == sorted(versions)
    final = store.deployment("prod")
    assert (final.current, final.image) == (chain[-1], f"img-{chain[-1]}")
    assert final.previous == chain[-2]


class CuttingProxy:
    """A TCP proxy to the S3 server that goes away for good when it sees a chosen request.

    The store's first uploads pass; at the request line naming `cut_at` the proxy drops every
    connection and stops listening, as a server that became unreachable mid-store does.
    """

    def __init__(self, upstream: str, cut_at: bytes) -> None:
        self.upstream = ("127.0.0.1", int(upstream.rsplit(":", 1)[1]))
        self.cut_at = cut_at
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.cut = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, inspect: bool) -> None:
        with contextlib.suppress(OSError):
            while not self.cut.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if inspect and data.startswith(b"PUT ") and self.cut_at in data.split(b"\r\n")[0]:
                    self.close()
                    return
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.cut.set()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_s3_unreachable_mid_store_is_one_clear_error_and_no_version(seaweedfs):
    url = f"s3://{seaweedfs.bucket}/test-{uuid.uuid4().hex[:12]}"
    proxy = CuttingProxy(seaweedfs.endpoint, cut_at=b"/labels.json")
    try:
        through_proxy = ArtifactStore(
            url, storage_options={"endpoint_url": proxy.endpoint}, attempts=2
        )
        started = time.monotonic()
        with pytest.raises(StoreError) as err:
            through_proxy.put(b"model" * 1000, LABELS, {})
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert proxy.cut.is_set(), "the store never reached the labels upload"
    message = str(err.value)
    assert message.startswith(f"storing a version in store {url}: ")
    assert "Could not connect to the endpoint URL" in message
    assert seaweedfs.secret_key not in message
    assert elapsed < 60, f"retries took {elapsed:.0f} s"
    # The model was uploaded before the cut; no version became visible.
    store = ArtifactStore(url)
    assert files_under(store, "versions")
    assert store.list_versions() == []
    assert store.clean_staging(older_than_seconds=0)
    assert files_under(store, "versions") == []


def test_s3_unreachable_from_the_start_is_a_store_error(seaweedfs):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    store = ArtifactStore(
        f"s3://{seaweedfs.bucket}/x",
        storage_options={"endpoint_url": f"http://127.0.0.1:{port}"},
        attempts=2,
    )
    for call in (store.list_versions, lambda: store.record_deployment("prod", "abc", "img")):
        with pytest.raises(StoreError, match="in store s3://kiln/x: Could not connect"):
            call()


def test_an_s3_store_uses_the_endpoint_the_environment_names_now(seaweedfs, monkeypatch):
    url = f"s3://{seaweedfs.bucket}/test-{uuid.uuid4().hex[:12]}"
    ArtifactStore(url).put(b"model", LABELS, {})
    assert len(ArtifactStore(url).list_versions()) == 1
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    # Another server for the same URL: a store made now must go there, not reuse the client
    # made for the session server (it would list that server's bucket instead).
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(StoreError, match="Could not connect"):
        ArtifactStore(url, attempts=1).list_versions()


class HangUpServer:
    """Accepts each connection, reads the request and hangs up: a retryable S3 failure."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                self.connections += 1
                with client:
                    client.recv(65536)


def test_kiln_retries_bounds_the_tries_of_each_s3_call(seaweedfs, monkeypatch):
    tries = {}
    for retries in (0, 2):
        server = HangUpServer()
        try:
            monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
            settings = KilnSettings(store=f"s3://{seaweedfs.bucket}/x", retries=retries)
            with pytest.raises(StoreError, match="listing versions in store s3://kiln/x: "):
                wiring.open_store(settings).list_versions()
        finally:
            server.listener.close()
        tries[retries] = server.connections
    # Each call is tried retries + 1 times (botocore's retries only: s3fs's own loop would
    # multiply them by five); how many calls a listing makes is s3fs's business.
    assert 0 < tries[0] < tries[2] <= 3 * tries[0]
