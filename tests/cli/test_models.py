"""The model commands through the real `kiln` entry point, in a subprocess."""

import json

import pytest

from kiln.store.artifact_store import ArtifactStore
from tests.support.factories import write_csv


def test_train_list_show_pin_prune(tmp_path, kiln_cli):
    store = tmp_path / "store"
    trained = kiln_cli("train", store=store)
    assert trained.returncode == 0, trained.stderr
    version = ArtifactStore(store).list_versions()[0].version
    assert f"stored version {version}" in trained.stdout
    assert "accuracy" in trained.stdout

    listed = json.loads(kiln_cli("models", "--json", store=store).stdout)
    assert [row["version"] for row in listed] == [version]
    shown = json.loads(kiln_cli("models", "show", version[:6], store=store).stdout)
    assert shown["labels"]["0"] == "setosa" and shown["data_source"] == "iris"

    assert kiln_cli("pin", version, store=store).returncode == 0
    assert json.loads(kiln_cli("models", "--json", store=store).stdout)[0]["pinned"] is True
    pruned = kiln_cli("prune", "--keep", "1", "--dry-run", store=store)
    assert "would remove 0 version(s)" in pruned.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("models", "show", "nope"), "error: no version 'nope'"),
        (("train", "--min-score", "0.999"), "error: quality gate: accuracy = "),
    ],
)
def test_errors_are_one_line_and_exit_non_zero(tmp_path, args, message, kiln_cli):
    result = kiln_cli(*args, store=tmp_path / "store")
    assert result.returncode == 1
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert ArtifactStore(tmp_path / "store").list_versions() == []


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["a", "b"], [[1, 2], [3, 4]], "no label column 'label'"),
        (["a", "label"], [[1, "x"], ["inf", "y"]], "data row 2, column 'a': inf is not a finite"),
        (["a", "label"], [[1, "x"], [2, "x"]], "needs at least two classes"),
    ],
)
def test_bad_csv_stores_nothing(tmp_path, header, rows, message, kiln_cli):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    result = kiln_cli("train", "--data", str(path), store=tmp_path / "store")
    assert result.returncode == 1
    assert message in result.stderr
    assert ArtifactStore(tmp_path / "store").list_versions() == []


def test_gamma_is_checked_while_parsing(tmp_path, kiln_cli):
    # was a DataError after loading the data (status 1); now a usage error before any work
    result = kiln_cli("train", "--gamma", "lots", store=tmp_path / "store")
    assert result.returncode == 2
    assert "'lots' is not 'scale', 'auto' or a positive number" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert ArtifactStore(tmp_path / "store").list_versions() == []
