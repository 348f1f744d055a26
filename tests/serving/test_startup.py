"""Start-up: the model directory contract, and every way it can fail."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from model_dirs import iris_onnx_bytes, write_model_dir

from serving.app import create_app
from serving.artifacts import ModelLoadError, read_artifacts
from serving.config import ConfigError, ServingConfig
from serving.model import load_model

REPO = Path(__file__).resolve().parents[2]


def test_loads_and_warms_up(config):
    model = load_model(config)
    assert model.n_features == 4
    assert model.input.name == "X"
    assert model.labels == ("setosa", "versicolor", "virginica")
    assert model.label_names(model.sample_labels) == ["setosa"]
    assert model.version == "3f2a9c1b7d4e"


def test_config_from_env_reads_the_reference_names(tmp_path):
    config = ServingConfig.from_env(
        {
            "MODEL_FILEPATH": str(tmp_path / "m" / "model.onnx"),
            "LABEL_FILEPATH": str(tmp_path / "labels.json"),
            "MODEL_SHA256": "ABC",
            "MAX_ROWS": "7",
            "MAX_BODY_BYTES": "4096",
            "ORT_INTRA_OP_THREADS": "2",
        }
    )
    assert config.labels_path == tmp_path / "labels.json"
    assert config.metadata_path == tmp_path / "m" / "metadata.json"  # beside the model
    assert config.expected_sha256 == "abc"
    assert (config.max_rows, config.max_body_bytes, config.intra_op_threads) == (7, 4096, 2)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "MODEL_FILEPATH is not set"),
        ({"MODEL_FILEPATH": "/m.onnx", "MAX_ROWS": "lots"}, "MAX_ROWS='lots' is not an integer"),
        ({"MODEL_FILEPATH": "/m.onnx", "MAX_ROWS": "0"}, "MAX_ROWS=0 is below the minimum 1"),
    ],
)
def test_bad_config_is_named(environ, message):
    with pytest.raises(ConfigError, match=message):
        ServingConfig.from_env(environ)


def _fails(directory: Path, match: str, **overrides) -> None:
    config = ServingConfig.for_model_dir(directory, **overrides)
    with pytest.raises(ModelLoadError, match=match) as raised:
        load_model(config)
    assert "\n" not in str(raised.value)  # one clear line


def test_missing_model(tmp_path):
    directory = write_model_dir(tmp_path)
    (directory / "model.onnx").unlink()
    _fails(directory, r"model .*model.onnx does not exist")


def test_missing_labels(tmp_path):
    directory = write_model_dir(tmp_path)
    (directory / "labels.json").unlink()
    _fails(directory, r"labels .*labels.json does not exist")


def test_missing_metadata(tmp_path):
    directory = write_model_dir(tmp_path)
    (directory / "metadata.json").unlink()
    _fails(directory, r"metadata .*metadata.json does not exist")


def test_corrupt_model_fails_its_checksum(tmp_path):
    directory = write_model_dir(tmp_path)
    model = directory / "model.onnx"
    model.write_bytes(model.read_bytes()[:-100])
    _fails(directory, r"has sha256 [0-9a-f]{64}, but metadata.json records [0-9a-f]{64}")


def test_corrupt_model_with_a_matching_checksum_is_refused_by_onnx_runtime(tmp_path):
    """Metadata written for garbage: the sha256 agrees, ONNX Runtime does not."""
    directory = write_model_dir(tmp_path, model_bytes=b"this is not an onnx model")
    _fails(directory, r"is not a loadable ONNX model")


def test_sha256_mismatch_with_the_build_time_value(tmp_path):
    directory = write_model_dir(tmp_path)
    _fails(
        directory, r"but MODEL_SHA256 \(recorded at build time\) is 0{64}", expected_sha256="0" * 64
    )


def test_matching_build_time_sha256_loads(model_dir):
    sha = hashlib.sha256((model_dir / "model.onnx").read_bytes()).hexdigest()
    model = load_model(ServingConfig.for_model_dir(model_dir, expected_sha256=sha))
    assert model.sha256 == sha


def test_version_mismatch(model_dir):
    _fails(
        model_dir, "is version 3f2a9c1b7d4e, but MODEL_VERSION is other", expected_version="other"
    )


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (
            {"0": "setosa", "1": "versicolor"},
            "returns 3 class probabilities, but labels.json names 2",
        ),
        ({"0": "a", "2": "b", "3": "c"}, r"class indices must be 0..2"),
        ({"zero": "a"}, "is not a class index"),
        ({}, "is empty"),
    ],
)
def test_bad_labels(tmp_path, labels, match):
    _fails(write_model_dir(tmp_path, labels=labels), match)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"sample_input": [[1.0, 2.0]]}, r"'sample_input' has shape \[1, 2\]"),
        ({"sample_input": "rows"}, "'sample_input' must be a non-empty list of rows"),
        ({"version": 7}, "'version' must be a non-empty string"),
    ],
)
def test_bad_metadata(tmp_path, overrides, match):
    _fails(write_model_dir(tmp_path, metadata_overrides=overrides), match)


def test_metadata_not_json(tmp_path):
    directory = write_model_dir(tmp_path)
    (directory / "metadata.json").write_text("{not json")
    _fails(directory, "metadata .* is not valid JSON")


def test_read_artifacts_needs_no_onnx_runtime(model_dir):
    """The gunicorn master verifies files with this module alone."""
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from serving.artifacts import read_artifacts\n"
        "from serving.config import ServingConfig\n"
        f"a = read_artifacts(ServingConfig.for_model_dir({str(model_dir)!r}))\n"
        "print(a.version)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3f2a9c1b7d4e"
    assert read_artifacts(ServingConfig.for_model_dir(model_dir)).labels[0] == "setosa"


def test_serving_needs_neither_kiln_nor_scikit_learn(tmp_path):
    code = (
        "import sys\n"
        "for name in ('sklearn', 'skl2onnx', 'kiln', 'flows', 'prefect'):\n"
        "    sys.modules[name] = None\n"
        "import serving.app, serving.gunicorn_conf, serving.runner, serving.__main__\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert out.returncode == 0, out.stderr


async def _run_lifespan(app) -> list[dict]:
    sent: list[dict] = []
    inbox: asyncio.Queue = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "lifespan.startup.complete":
            await inbox.put({"type": "lifespan.shutdown"})

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    return sent


def test_lifespan_loads_the_model(model_dir):
    app = create_app(ServingConfig.for_model_dir(model_dir))
    sent = asyncio.run(_run_lifespan(app))
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert app.model is not None
    assert app.ready is False  # shut down


def test_lifespan_failure_logs_one_line_and_never_turns_ready(tmp_path, caplog):
    directory = write_model_dir(tmp_path, model_bytes=iris_onnx_bytes())
    app = create_app(ServingConfig.for_model_dir(directory, expected_sha256="f" * 64))
    with caplog.at_level(logging.ERROR, logger="serving"):
        sent = asyncio.run(_run_lifespan(app))
    assert sent == [{"type": "lifespan.startup.failed", "message": ""}]
    assert app.ready is False and app.model is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage().startswith("model not loaded, not serving: model ")
    assert "MODEL_SHA256" in errors[0].getMessage()


def test_onnx_runtime_threads_come_from_the_config(model_dir):
    model = load_model(
        ServingConfig.for_model_dir(model_dir, intra_op_threads=2, inter_op_threads=1)
    )
    options = model.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert model.label_names(model.predict(model.sample_input)[0]) == ["setosa"]
