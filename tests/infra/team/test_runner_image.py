"""`kiln build --runner`: the runner image built by kiln's engine builder, pushed by digest,
pulled back and run by the engine (kiln's version, the pipeline imports, no dev tools)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kiln.images.registry import Registry
from tests.conftest import engine_client

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]
RUN = uuid.uuid4().hex[:8]
CHECK = (
    "import importlib.util, os, flows.pipeline, prefect, sklearn, skl2onnx, dxf, kubernetes, s3fs;"
    "print(os.getuid(), [m for m in ('pytest', 'mypy', 'ruff', 'hypothesis')"
    " if importlib.util.find_spec(m)])"
)


def build_runner(repository: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "KILN_RUNNER_REPOSITORY"}
    proc = subprocess.run(
        [sys.executable, "-m", "kiln.cli.app", "build", "--runner", "--repository", repository]
        + ["--output", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_runner_image_is_pushed_by_digest_and_runs_kiln_and_the_pipeline():
    repository = f"kiln-test/{RUN}/runner"
    registry_host = os.environ.get("KILN_REGISTRY", "127.0.0.1:5000")
    first = build_runner(repository)
    name, digest = first["reference"].split("@")
    assert name == f"{registry_host}/{repository}" and digest.startswith("sha256:")
    assert first["built"] is True and first["tag"].startswith("runner-")
    with Registry(registry_host) as registry:
        assert registry.manifest_digest(repository, first["tag"]) == digest
        assert registry.manifest_digest(repository, digest) == digest

    engine = engine_client()
    try:
        # Run what the registry holds: drop the local copy, pull by digest.
        engine.images.remove(f"{name}:{first['tag']}", force=True)
        engine.images.pull(name, tag=digest)
        version = engine.containers.run(first["reference"], ["kiln", "--version"], remove=True)
        assert version.decode().strip() == "kiln 0.1.0"
        checked = engine.containers.run(first["reference"], ["python", "-c", CHECK], remove=True)
        assert checked.decode().strip() == "10001 []"  # non-root, and no dev tools inside
        # The deployments' entrypoint path resolves from the image's working dir.
        found = engine.containers.run(
            first["reference"],
            ["python", "-c", "print(open('flows/pipeline.py').read(9))"],
            remove=True,
        )
        assert found.decode().startswith('"""')

        again = build_runner(repository)  # unchanged: found by its content key, not rebuilt
        assert again["built"] is False and again["reference"] == first["reference"]
    finally:
        for image in engine.images.list(name=name):
            engine.images.remove(image.id, force=True)
        with Registry(registry_host) as registry:
            registry.delete_manifest(repository, digest)
