"""Builds, prunes and listings racing each other on one store, and the lock between them.

Fakes stand in at the wiring edge only: a registry that has no image yet and a builder that
pushes nothing, so a race is replayed deterministically in milliseconds. The store, its
files and the locks are real.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from kiln.config.errors import BuildError
from kiln.images.build import BuildOptions, build_image
from kiln.images.retention import prune_versions
from kiln.infra.locks import FileLocks, LockTimeout, store_key, store_locks
from kiln.store.artifact_store import ArtifactStore

LABELS = {0: "a", 1: "b"}
DIGEST = "sha256:" + "d" * 64


class EmptyRegistry:
    """A registry that holds nothing yet and records deletes (the wiring edge's fake)."""

    host = "127.0.0.1:5999"

    def __init__(self) -> None:
        self.deleted: list[tuple[str, str]] = []

    def ping(self) -> None:
        pass

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        return None

    def delete_manifest(self, repository: str, digest: str) -> bool:
        self.deleted.append((repository, digest))
        return True


def stored(root: Path, count: int) -> tuple[ArtifactStore, list[str]]:
    """A store with `count` versions, oldest first (distinct `created` seconds)."""
    store = ArtifactStore(root)
    versions = [store.put(f"model {i}".encode(), LABELS, {"metrics": {}}) for i in range(count)]
    for age, version in enumerate(reversed(versions)):
        path = root / "versions" / version / "metadata.json"
        meta = json.loads(path.read_text())
        meta["created"] = f"2026-01-01T00:00:{59 - age:02d}Z"
        path.write_text(json.dumps(meta))
    return store, versions


def locks(tmp_path: Path, wait: float = 30.0) -> FileLocks:
    return FileLocks(tmp_path / "locks", wait=wait, poll=0.01)


def test_a_prune_during_a_build_waits_for_it(tmp_path):
    store, (old, _new) = stored(tmp_path / "store", 2)
    shared = locks(tmp_path)
    pruned: list = []
    prune = threading.Thread(
        target=lambda: pruned.append(prune_versions(ArtifactStore(store.url), 1, locks=shared))
    )

    def builder(job):
        prune.start()  # a prune arrives while this build is pushing
        prune.join(0.5)
        return DIGEST, 10

    options = BuildOptions(builder="layer", repository="kiln/race")
    registry = EmptyRegistry()
    result = build_image(store, old, registry, options, builders={"layer": builder}, locks=shared)
    prune.join(10)
    assert result.image == f"{options.registry}/kiln/race@{DIGEST}"
    assert [info.version for info in pruned[0].versions.removed] == [old]
    assert pruned[0].versions.removed[0].images == [result.image]  # so its image goes too


def test_a_build_whose_version_vanished_deletes_what_it_pushed(tmp_path):
    store, (old, _new) = stored(tmp_path / "store", 2)

    def builder(job):  # a prune that takes no lock (an old kiln) removes the version
        store.remove_version(old)
        return DIGEST, 10

    registry = EmptyRegistry()
    options = BuildOptions(builder="layer", repository="kiln/race")
    with pytest.raises(BuildError, match=f"building {old}: the version left the store"):
        build_image(
            store, old, registry, options, builders={"layer": builder}, locks=locks(tmp_path)
        )
    assert registry.deleted == [("kiln/race", DIGEST)]


def test_concurrent_prunes_take_turns(tmp_path):
    store, versions = stored(tmp_path / "store", 4)
    shared = locks(tmp_path)
    first_removed, errors, results = threading.Event(), [], []
    slow = ArtifactStore(store.url)
    remove = slow.remove_version

    def remove_slowly(version: str) -> None:
        remove(version)
        first_removed.set()
        time.sleep(0.3)  # the other prune arrives now

    slow.remove_version = remove_slowly  # type: ignore[method-assign]

    def run(the_store: ArtifactStore) -> None:
        try:
            results.append(prune_versions(the_store, 1, locks=shared))
        except Exception as err:  # noqa: BLE001 - the test reports any failure
            errors.append(err)

    first = threading.Thread(target=run, args=(slow,))
    first.start()
    assert first_removed.wait(10)
    run(ArtifactStore(store.url))
    first.join(10)
    assert errors == []
    removed = sorted(info.version for r in results for info in r.versions.removed)
    assert removed == sorted(versions[:3])  # each removed once, by one of the two
    assert [v.version for v in store.list_versions()] == [versions[3]]


def test_listing_while_a_prune_removes_a_version(tmp_path, monkeypatch):
    store, (old, new) = stored(tmp_path / "store", 2)
    # The batch read of metadata after the listing (the back end's read_many).
    read_many = store.backend.read_many

    def pruned_then_read(paths, *args, **kwargs):  # the prune lands after the listing
        ArtifactStore(store.url).remove_version(old)
        monkeypatch.setattr(store.backend, "read_many", read_many)
        return read_many(paths, *args, **kwargs)

    monkeypatch.setattr(store.backend, "read_many", pruned_then_read)
    assert [info.version for info in store.list_versions()] == [new]


def test_a_dry_run_does_not_wait(tmp_path):
    store, versions = stored(tmp_path / "store", 2)
    shared = locks(tmp_path, wait=0.0)
    with held_elsewhere(shared, store_key(store.url), "building x"):
        holder = threading.Thread(
            target=lambda: prune_versions(store, 1, dry_run=True, locks=shared)
        )
        holder.start()
        holder.join(5)
        assert not holder.is_alive()


# -- the lock itself ---------------------------------------------------------------------------


def test_the_second_run_waits_with_a_message_then_fails_with_one_line(tmp_path):
    messages: list[str] = []
    first = FileLocks(tmp_path, wait=30)
    second = FileLocks(tmp_path, wait=0.2, poll=0.01, notify=messages.append)
    with held_elsewhere(first, "store-x", "deploying v1 to local"):
        started = time.monotonic()
        with pytest.raises(LockTimeout) as err, second.hold("store-x", "pruning store x"):
            pass
        assert time.monotonic() - started >= 0.2
    text = str(err.value)
    assert text.startswith("pruning store x: gave up after 0 s waiting for another kiln run")
    assert "deploying v1 to local" in text and "\n" not in text
    assert len(messages) == 1 and messages[0].startswith("pruning store x: waiting for")
    with second.hold("store-x", "pruning store x"):  # free again once the first is done
        pass


def test_a_lock_nests_in_one_thread_and_serialises_threads(tmp_path):
    shared = FileLocks(tmp_path, poll=0.01)
    order: list[str] = []
    with shared.hold("k", "outer"), shared.hold("k", "inner"):
        other = threading.Thread(target=lambda: _hold_and_note(shared, order))
        other.start()
        time.sleep(0.2)
        order.append("first done")
    other.join(5)
    assert order == ["first done", "second"]


def _hold_and_note(shared: FileLocks, order: list[str]) -> None:
    with shared.hold("k", "second"):
        order.append("second")


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from kiln.infra.locks import FileLocks\n"
            f"with FileLocks({str(tmp_path)!r}).hold('k', 'a run that dies'):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        late = FileLocks(tmp_path, wait=0.05, poll=0.01)
        with pytest.raises(LockTimeout, match="a run that dies"), late.hold("k", "next"):
            pass
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
    with FileLocks(tmp_path, wait=5, poll=0.01).hold("k", "next"):
        pass


def test_a_deploy_holds_the_stores_lock(tmp_path):
    from kiln.rollout import roll_back, roll_out

    store, (version, _) = stored(tmp_path / "store", 2)
    target = SimpleNamespace(name="local", where="locally")  # never reached: the lock comes first
    patient = locks(tmp_path, wait=0.05)
    with held_elsewhere(locks(tmp_path), store_key(store.url), "pruning the store"):
        with pytest.raises(LockTimeout, match=f"deploying {version} locally: gave up"):
            roll_out(store, version, target, locks=patient)  # type: ignore[arg-type]
        with pytest.raises(LockTimeout, match="rolling local back: gave up .*pruning the store"):
            roll_back(store, target, locks=patient)  # type: ignore[arg-type]


@contextlib.contextmanager
def held_elsewhere(shared: FileLocks, key: str, purpose: str) -> Iterator[None]:
    """Hold `key` in another thread (another run) for the block."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with shared.hold(key, purpose):
            taken.set()
            done.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def test_a_local_store_is_locked_beside_itself_a_remote_one_machine_wide(tmp_path):
    """No settings decide where: a local store's folder, else the machine's temp dir, which
    runs with different KILN_STATE_DIRs share (so they still wait for each other)."""
    import tempfile

    local = ArtifactStore(tmp_path / "store")
    assert store_locks(local).directory == tmp_path / "store" / "locks"
    remote = SimpleNamespace(url="s3://bucket/models")
    assert store_locks(remote).directory == Path(tempfile.gettempdir()) / "kiln-locks"
