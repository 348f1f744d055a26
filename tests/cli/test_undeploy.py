"""`kiln undeploy --target kubernetes` and `kiln status` against the emulated API server
(tests/support/k8s_emulator.py: test code standing in for a cluster, over real HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.cli.app import main
from kiln.config.settings import get_settings
from kiln.store.artifact_store import ArtifactStore
from tests.support.k8s_emulator import EmulatedApiServer, use_emulated_cluster

NS = "kiln-undeploy"
SAMPLE = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture
def cluster_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatedApiServer]:
    with EmulatedApiServer() as emulator:
        use_emulated_cluster(monkeypatch, emulator, tmp_path, NS)
        monkeypatch.setenv("KILN_K8S_CREATE_NAMESPACE", "true")
        monkeypatch.setenv("KILN_K8S_POLL_INTERVAL", "0.02")
        get_settings.cache_clear()
        yield emulator
        get_settings.cache_clear()


def kiln(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_undeploy_removes_kilns_objects_and_the_record(cluster_env, tmp_path, capsys) -> None:
    store = ArtifactStore(tmp_path / "store")
    version = store.put(b"model a", {0: "setosa", 1: "virginica"}, {"sample_input": SAMPLE})
    image = f"127.0.0.1:5000/kiln/iris@sha256:{version[:16].ljust(64, '0')}"
    store.record_image(version, image)
    cluster_env.cluster.push(image, version)

    code, out, err = kiln(capsys, "deploy", version, "-o", "json")
    assert code == 0, err
    assert json.loads(out)["image"] == image
    code, out, _ = kiln(capsys, "status", "-o", "json")
    [state] = json.loads(out)
    assert state["recorded"]["current"] == version and state["warnings"] == []

    assert ("Deployment", NS, "kiln") in cluster_env.cluster.objects
    code, out, err = kiln(capsys, "undeploy")
    assert code == 0, err
    assert out.startswith("undeployed kubernetes: removed ") and "Deployment/kiln" in out
    assert ("Deployment", NS, "kiln") not in cluster_env.cluster.objects
    assert store.deployment("kubernetes") is None

    code, out, err = kiln(capsys, "status", "--target", "kubernetes")
    assert code == 0 and "nothing deployed" in out and "nothing running" in out
    code, out, _ = kiln(capsys, "undeploy")
    assert code == 0 and out.startswith("nothing ran on kubernetes")
