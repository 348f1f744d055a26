"""A version rolled back after a failed smoke test is not shipped again by any retry.

The orchestrator (kiln/rollout/orchestrator.py) and the pipeline's roll-out task with a
real store and a fake target at the wiring edge: the target's server answers /metadata
and /predict as the test tells it (the local target with the real engine is covered end
to end elsewhere; the Kubernetes one in tests/rollout/kubernetes/test_rollout_emulated.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flows import tasks
from kiln.cli.app import main
from kiln.config.errors import RolloutError, StoreError
from kiln.config.settings import KilnSettings, get_settings
from kiln.rollout import LOCAL, Deployed, is_transient, roll_out
from kiln.rollout.kubernetes.api import ApiUnreachable
from kiln.rollout.smoke import Caller, Reply, SmokeTest
from kiln.store.artifact_store import REASON_CHARS, ROLLED_BACK_KEPT, ArtifactStore

SAMPLE = [[5.1, 3.5, 1.4, 0.2]]


@dataclass
class FakeTarget:
    """A target whose servers answer as told: `reports[version]` is the version a server
    of `version` reports (a wrong one fails the smoke test), `unreachable` makes its
    smoke-test requests fail as an unreachable API server does, `not_ready` makes ship
    fail before any smoke test."""

    reports: dict[str, str] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)
    not_ready: set[str] = field(default_factory=set)
    serving: Deployed | None = None
    shipped: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    name: str = LOCAL
    where: str = "locally"
    endpoint: str = "http://127.0.0.1:1/"

    def current(self) -> Deployed | None:
        return self.serving

    def ship(self, version: str, image: str, smoke: SmokeTest) -> str:
        self.shipped.append(version)
        if version in self.not_ready:
            raise RolloutError(f"container of {version} not ready after 1s")
        try:
            smoke(self._caller(version))
        except Exception as err:  # as the real targets do: the cause kept
            raise RolloutError(f"smoke test on {self.endpoint}: {err}") from err
        self.serving = Deployed(version, image)
        return self.endpoint

    def _caller(self, version: str) -> Caller:
        def call(method: str, path: str, body: Any) -> Reply:
            if version in self.unreachable:
                raise ApiUnreachable(f"{method} {path}: connection refused")
            if path == "/metadata":
                return Reply(
                    200, json.dumps({"version": self.reports.get(version, version)}).encode()
                )
            return Reply(200, json.dumps({"prediction": [[1.0, 0.0]] * len(body["data"])}).encode())

        return call

    def restore(self, before: Deployed) -> str:
        self.restored.append(str(before.version))
        self.serving = before
        return f"{before.version} serves again"

    def live(self) -> list[str]:
        return []


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def add(store: ArtifactStore, name: str) -> str:
    version = store.put(f"model {name}".encode(), {0: "a", 1: "b"}, {"sample_input": SAMPLE})
    store.record_image(version, f"127.0.0.1:5000/kiln/iris@sha256:{version.ljust(64, '0')}")
    return version


def test_a_failed_smoke_test_is_recorded_and_the_version_refused_until_forced(
    store: ArtifactStore,
) -> None:
    good, bad, other = add(store, "good"), add(store, "bad"), add(store, "other")
    target = FakeTarget(reports={bad: "something-else"})
    roll_out(store, good, target)

    with pytest.raises(RolloutError, match=f"{good} serves again"):
        roll_out(store, bad, target)
    record = store.deployment(LOCAL)
    assert record is not None and record.current == good
    reason = record.rolled_back_reason(bad)
    assert reason is not None and "reports version 'something-else'" in reason

    target.reports.clear()  # it would pass now; the record still refuses it
    with pytest.raises(RolloutError) as caught:
        roll_out(store, bad, target)
    assert str(caught.value) == (
        f"not rolling out {bad} locally: it failed its smoke test there and was rolled back "
        f"({reason}); ship a new version, or ship this one anyway with --ship-rolled-back "
        "(flow parameter ship_rolled_back)"
    )
    assert target.shipped == [good, bad]  # refused before the target was touched
    assert target.serving == Deployed(good, store.image_refs(good)[0])

    roll_out(store, other, target)  # a new version ships normally
    assert target.serving is not None and target.serving.version == other

    result = roll_out(store, bad, target, ship_rolled_back=True)
    assert result.version == bad and target.shipped[-1] == bad
    record = store.deployment(LOCAL)
    assert record is not None and record.rolled_back == []  # it passed: no longer refused
    roll_out(store, other, target)
    roll_out(store, bad, target)  # and ships again without being forced


def test_the_refusal_is_per_target(store: ArtifactStore) -> None:
    good, bad = add(store, "good"), add(store, "bad")
    local = FakeTarget(reports={bad: "wrong"})
    roll_out(store, good, local)
    with pytest.raises(RolloutError):
        roll_out(store, bad, local)

    elsewhere = FakeTarget(name="kubernetes", where="to kubernetes")
    roll_out(store, bad, elsewhere)  # never rolled back there
    assert elsewhere.shipped == [bad]
    record = store.deployment("kubernetes")
    assert record is not None and record.rolled_back_reason(bad) is None


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        ("unreachable", "a smoke test the API server never answered is transient"),
        ("not_ready", "never became ready: not a smoke test failure"),
    ],
)
def test_failures_that_are_not_the_models_answer_are_not_recorded(
    store: ArtifactStore, fault: str, why: str
) -> None:
    good, new = add(store, "good"), add(store, "new")
    target = FakeTarget()
    roll_out(store, good, target)
    getattr(target, fault).add(new)

    with pytest.raises(RolloutError) as caught:
        roll_out(store, new, target)

    assert is_transient(caught.value) == (fault == "unreachable")
    assert target.restored == [good]
    record = store.deployment(LOCAL)
    assert record is not None and record.rolled_back == [], why
    getattr(target, fault).clear()
    roll_out(store, new, target)  # the retry ships it
    assert target.serving is not None and target.serving.version == new


def test_a_failure_with_nothing_to_roll_back_to_records_nothing(store: ArtifactStore) -> None:
    bad = add(store, "bad")
    target = FakeTarget(reports={bad: "wrong"})
    with pytest.raises(RolloutError, match="nothing to restore"):
        roll_out(store, bad, target)
    assert store.deployment(LOCAL) is None
    assert target.restored == []


def test_a_store_that_cannot_record_the_rollback_leaves_the_rollout_error(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = add(store, "good"), add(store, "bad")
    target = FakeTarget(reports={bad: "wrong"})
    roll_out(store, good, target)

    def broken(*_args: Any) -> None:
        raise StoreError("the store is read-only")

    monkeypatch.setattr(store, "record_rollback", broken)
    with caplog.at_level(logging.ERROR), pytest.raises(RolloutError, match="reports version"):
        roll_out(store, bad, target)
    logged = [r.getMessage() for r in caplog.records if r.name == "kiln.rollout.orchestrator"]
    assert (
        logged[-1]
        == f"recording that {bad} was rolled back on {LOCAL} failed: the store is read-only"
    )


def test_the_record_keeps_a_bounded_list_of_bounded_reasons(store: ArtifactStore) -> None:
    versions = [add(store, str(n)) for n in range(ROLLED_BACK_KEPT + 2)]
    assert store.record_rollback(LOCAL, versions[0], "no record yet") is None
    store.record_deployment(LOCAL, versions[0], "image")
    for version in versions[1:]:
        store.record_rollback(LOCAL, version, "x" * (REASON_CHARS * 2))
    store.record_rollback(LOCAL, versions[1], "again")  # the newest entry, not a duplicate

    record = store.deployment(LOCAL)
    assert record is not None and len(record.rolled_back) == ROLLED_BACK_KEPT
    assert [e["version"] for e in record.rolled_back][-1] == versions[1]
    assert record.rolled_back_reason(versions[1]) == "again"
    assert record.rolled_back_reason(versions[2]) is None  # the oldest went first
    assert all(len(e["reason"]) <= REASON_CHARS for e in record.rolled_back)


def test_a_record_written_before_rollbacks_were_recorded_still_reads(
    store: ArtifactStore,
) -> None:
    version = add(store, "a")
    store.record_deployment(LOCAL, version, "image")
    path = Path(store.url) / "deployments" / f"{LOCAL}.json"
    old = json.loads(path.read_text())
    del old["rolled_back"]
    path.write_text(json.dumps(old))
    record = store.deployment(LOCAL)
    assert record is not None and record.rolled_back == []


def test_the_pipelines_roll_out_task_passes_the_choice_through(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `prefect flow-run retry` runs: the task, with the flow's parameter."""
    good, bad = add(store, "good"), add(store, "bad")
    target = FakeTarget(reports={bad: "wrong"})
    monkeypatch.setattr(tasks.wiring, "make_target", lambda _settings, _name: target)
    monkeypatch.setattr(tasks, "rollout_slot", lambda *_: contextlib.nullcontext())
    monkeypatch.setattr(tasks, "get_run_logger", lambda: logging.getLogger("test"))
    settings = KilnSettings(store=str(store.url))
    image = store.image_refs(bad)[0]
    run = tasks.rollout_task.fn
    run(str(store.url), good, LOCAL, store.image_refs(good)[0], settings)
    with pytest.raises(RolloutError, match="reports version"):
        run(str(store.url), bad, LOCAL, image, settings)
    target.reports.clear()

    with pytest.raises(RolloutError, match="was rolled back"):
        run(str(store.url), bad, LOCAL, image, settings)
    assert run(str(store.url), bad, LOCAL, image, settings, True).version == bad


def test_kiln_status_lists_the_rolled_back_versions(
    store: ArtifactStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    good, bad = add(store, "good"), add(store, "bad")
    store.record_deployment("kubernetes", good, "image-of-good")
    store.record_rollback("kubernetes", bad, "POST /predict answered 500")
    for key in list(os.environ):
        if key.startswith("KILN_") or key == "KUBERNETES_SERVICE_HOST":
            monkeypatch.delenv(key)
    monkeypatch.setenv("KILN_STORE", str(store.url))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))  # live: unknown
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exited:
            main(["status"])
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert exited.value.code in (0, None), out
    assert f"  rolled back  {bad} (" in out and "): POST /predict answered 500" in out
