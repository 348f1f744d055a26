"""The commands people reach for, through the `kiln` entry point against a real store."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kiln.cli.app import main
from kiln.cli.deploy import try_it_command
from kiln.config.settings import get_settings
from kiln.store.artifact_store import ArtifactStore
from kiln.training.params import TrainParams
from kiln.training.sequence import run_training
from tests.support.factories import write_csv


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A store with two iris versions that differ in C and seed."""
    root = tmp_path_factory.mktemp("cli-store") / "store"
    # Created a minute apart: the store records seconds, and two versions stored within one
    # second would be ordered by id, not by age.
    start = datetime.now(UTC)
    first = run_training(ArtifactStore(root, clock=lambda: start), TrainParams(C=1.0, seed=1))
    later = start + timedelta(minutes=1)
    second = run_training(ArtifactStore(root, clock=lambda: later), TrainParams(C=10.0, seed=2))
    return root, first.version, second.version


@pytest.fixture
def env(trained, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    for key in list(os.environ):
        if key.startswith("KILN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KILN_STORE", str(trained[0]))
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield trained[0]
    get_settings.cache_clear()


def kiln(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_models_diff_names_what_differs(env, trained, capsys) -> None:
    _, first, second = trained
    code, out, err = kiln(capsys, "models", "diff", first[:8], second, "-o", "json")
    assert code == 0, err
    diff = json.loads(out)
    keys = {row["key"]: (row["a"], row["b"]) for row in diff["differences"]}
    assert keys["params.C"] == (1.0, 10.0) and keys["params.seed"] == (1, 2)
    assert {row["section"] for row in diff["differences"]} >= {"params"}
    assert not any(row["section"] == "data" for row in diff["differences"])  # same iris

    code, out, _ = kiln(capsys, "models", "diff", first, first)
    assert code == 0 and "no differences" in out


def test_models_list_keeps_whole_ids_at_80_columns(env, trained, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = kiln(capsys, "models")
    assert code == 0
    for version in trained[1:]:
        assert version in out  # never cut with an ellipsis
    code, out, _ = kiln(capsys, "models", "-o", "json")
    assert {row["version"] for row in json.loads(out)} == set(trained[1:])


def test_show_text_and_json(env, trained, capsys) -> None:
    code, out, _ = kiln(capsys, "models", "show", trained[1], "-o", "json")
    assert code == 0 and json.loads(out)["params"]["C"] == 1.0
    code, out, _ = kiln(capsys, "models", "show", trained[1], "-o", "text")
    assert code == 0 and 'data_source: "iris"' in out


def test_prune_says_why_each_version_stays(env, trained, capsys) -> None:
    _, first, second = trained
    store = ArtifactStore(env)
    store.pin(first)
    try:
        code, out, err = kiln(capsys, "prune", "--keep", "1", "--dry-run")
    finally:
        store.unpin(first)
    assert code == 0, err
    assert f"keep {second} " in out and "one of the newest 1" in out
    assert f"keep {first} " in out and "pinned" in out.split(f"keep {first} ")[1].splitlines()[0]
    assert "would remove 0 version(s), kept 2" in out


def test_predict_offline_from_csv_and_json(env, trained, capsys, tmp_path) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    csv_rows = write_csv(
        tmp_path / "rows.csv",
        ["sepal_length", "sepal_width", "petal_length", "petal_width", "label"],
        [[*r, "?"] for r in rows],
    )
    code, out, err = kiln(capsys, "predict", str(csv_rows), "-o", "json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["version"] == trained[2]  # latest
    assert answer["labels"] == ["setosa", "virginica"]
    assert all(abs(sum(p) - 1) < 1e-3 for p in answer["probabilities"])

    json_rows = tmp_path / "rows.json"
    json_rows.write_text(json.dumps({"data": rows}))
    code, out, _ = kiln(capsys, "predict", str(json_rows), "--version", trained[1][:8])
    assert code == 0 and [line.split("\t")[0] for line in out.splitlines()] == [
        "setosa",
        "virginica",
    ]


def test_predict_names_a_width_mismatch(env, capsys, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[[1, 2, 3]]")
    code, _, err = kiln(capsys, "predict", str(bad))
    assert code == 1 and "row 1 has 3 values" in err and "takes 4 features" in err
    assert len(err.splitlines()) == 1


def test_status_shows_only_recorded_targets(env, capsys) -> None:
    code, out, err = kiln(capsys, "status")
    assert code == 0, err
    assert "nothing deployed" in out and "kubernetes" not in out + err and "kubeconfig" not in err
    code, out, _ = kiln(capsys, "status", "-o", "json")
    assert code == 0 and json.loads(out) == []


def test_deploy_ships_the_latest_recorded_build(tmp_path) -> None:
    store = ArtifactStore(tmp_path / "store")
    version = store.put(b"model", {0: "a", 1: "b"}, {"sample_input": [[1.0, 2.0]]})
    newer = f"127.0.0.1:5000/kiln/iris@sha256:{'0' * 64}"  # sorts first, recorded last
    older = f"127.0.0.1:5000/kiln/iris@sha256:{'f' * 64}"
    store.record_image(version, older)
    store.record_image(version, newer)
    assert store.latest_image_ref(version) == newer
    store.record_image(version, older)  # built again: the latest once more
    assert store.latest_image_ref(version) == older


def test_the_try_it_line_uses_the_version_sample() -> None:
    line = try_it_command("http://127.0.0.1:8000", [[1.5, 2.0, 3.25, 4.0, 5.0, 6.0, 7.0, 8.0]])
    assert line is not None and line.startswith("curl -s -X POST http://127.0.0.1:8000/predict ")
    assert """-d '{"data":[[1.5,2.0,3.25,4.0,5.0,6.0,7.0,8.0]]}'""" in line
    assert try_it_command("kubernetes://ns/kiln", [[1.0]]) is None


def test_the_try_it_lines_for_kubernetes_go_through_kubectl_proxy() -> None:
    endpoint = "https://10.0.0.1:6443/api/v1/namespaces/ns/services/kiln:http/proxy"
    lines = try_it_command(endpoint, [[1.0]], context="prod cluster")
    assert lines is not None
    proxy, curl = lines.splitlines()
    assert proxy == "kubectl --context 'prod cluster' proxy --port 8001 &"
    assert curl.startswith(
        "curl -s -X POST http://127.0.0.1:8001/api/v1/namespaces/ns/services/kiln:http/proxy"
        "/predict -H 'Content-Type: application/json' "
    )


def test_progress_follows_steps_and_remembers_the_failed_one() -> None:
    import io
    import logging

    from rich.console import Console

    from kiln.cli.progress import progress

    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    with progress(console, "starting") as watcher:
        task_log = logging.getLogger("prefect.task_runs")
        task_log.info("loaded", extra={"task_run_name": "load-data-a1b"})
        assert (watcher.step, watcher.detail) == ("load-data", "loaded")
        task_log.info("pushing", extra={"task_run_name": "build-image-x9z"})
        task_log.error(
            "Finished in state Failed('boom')", extra={"task_run_name": "build-image-x9z"}
        )
        logging.getLogger("kiln.images.build").warning("the registry is slow")
    assert watcher.step == "build-image" and watcher.failed_step == "build-image"
    assert watcher.detail == "the registry is slow"
    assert out.getvalue() == "warning: the registry is slow\n"  # no live line off a terminal
