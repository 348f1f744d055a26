"""kiln installed as a wheel (what `pip install .` and the runner image do) works from any folder.

The wheel is built once from a copy of the checkout and installed with --no-deps into a
fresh venv that sees this environment's dependencies (a path file), not its editable kiln.
The e2e test goes on through the real registry and container engine: build, deploy, up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(
    argv: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """argv in cwd, with this environment (plus `env`) minus what would find the checkout."""
    merged = {**os.environ, **(env or {})}
    merged = {k: v for k, v in merged.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=merged
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a venv with kiln installed from its wheel."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    ignore = shutil.ignore_patterns(
        ".git", "artifacts", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
    )
    shutil.copytree(REPO, source, symlinks=True, ignore=ignore)
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(work / "dist"), str(source)],
        cwd=work,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (work / "dist").glob("kiln-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    deps = sysconfig.get_paths()["purelib"]
    # The dependencies of this environment, appended after the venv's own (plain path: the
    # editable kiln's hook in that folder is not loaded).
    (target / "site-packages" / "kiln-test-deps.pth").write_text(deps + "\n")
    installed = run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
        + ["--no-deps", "--no-index", "-q", str(wheel)],
        cwd=work,
    )
    if installed.returncode != 0 and "no such option: --python" in installed.stderr:
        pytest.skip("pip too old for --python")
    assert installed.returncode == 0, installed.stderr
    return venv / "bin"


def test_the_wheel_carries_the_resources_kiln_reads(installed: Path, tmp_path: Path) -> None:
    probe = textwrap.dedent(
        """
        import json
        import flows, kiln, serving
        from kiln.infra.engine import INFRA_SCRIPT
        from kiln.rollout.kubernetes.manifests import MANIFEST_DIR, render_manifests
        from kiln.images.serving_base import DOCKERFILE, SERVING_DIR, build_context
        from kiln.images.serving_base import serve_requirements
        model = __import__("pathlib").Path("model")
        model.mkdir()
        for name in ("model.onnx", "labels.json", "metadata.json"):
            (model / name).write_text("{}")
        objects = render_manifests("reg/kiln@sha256:" + "a" * 64, "v1", "team", MANIFEST_DIR)
        print(json.dumps({
            "flows": flows.__file__, "kiln": kiln.__file__, "serving": serving.__file__,
            "paths": [str(p) for p in (INFRA_SCRIPT, MANIFEST_DIR, DOCKERFILE, SERVING_DIR)],
            "kinds": sorted(o["kind"] for o in objects),
            "requirements": serve_requirements(),
            "context": len(build_context(model, []).getvalue()),
        }))
        """
    )
    result = run([str(installed / "python"), "-c", probe], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    venv = str(installed.parent)
    assert all(found[name].startswith(venv) for name in ("flows", "kiln", "serving"))
    for path in found["paths"]:
        assert path.startswith(venv), f"{path} is read from outside the installed package"
    # The installed kiln renders the same manifests as the checkout.
    from kiln.rollout.kubernetes.manifests import MANIFEST_DIR, render_manifests

    here = render_manifests("reg/kiln@sha256:" + "a" * 64, "v1", "team", MANIFEST_DIR)
    assert found["kinds"] == sorted(o["kind"] for o in here)
    assert "Deployment" in found["kinds"]
    assert any(r.startswith("onnxruntime") for r in found["requirements"])
    assert found["context"] > 10_000
    assert os.access(found["paths"][0], os.R_OK)


def test_an_installed_kiln_packs_its_own_wheel_again_for_the_runner_image(
    installed: Path, tmp_path: Path
) -> None:
    """Without a checkout, the runner image's kiln wheel is the installed one packed again
    (every member byte for byte) and its requirements are the wheel's `pipeline` extra."""
    from packaging.requirements import Requirement

    from kiln.images.runner_image import pipeline_requirements

    probe = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from kiln.images import runner_wheel
        from kiln.images.runner_image import SOURCE_ROOT, is_checkout
        dist = runner_wheel.installed()
        wheel = runner_wheel.repack(dist, Path(sys.argv[1]))
        print(json.dumps({
            "checkout": is_checkout(SOURCE_ROOT), "editable": runner_wheel.is_editable(dist),
            "wheel": str(wheel), "requirements": runner_wheel.extra_requirements(dist, "pipeline"),
        }))
        """
    )
    result = run([str(installed / "python"), "-c", probe, str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["checkout"] is False and found["editable"] is False
    [original] = (installed.parent.parent / "dist").glob("kiln-*.whl")
    assert members(Path(found["wheel"])) == members(original)

    def names(requirements: list[str]) -> set[str]:
        return {Requirement(r).name for r in requirements}

    assert names(found["requirements"]) == names(pipeline_requirements(REPO))


def members(wheel: Path) -> dict[str, bytes]:
    """A wheel's files and their bytes, its RECORD (hashes of the rest) left out."""
    with zipfile.ZipFile(wheel) as zf:
        return {n: zf.read(n) for n in zf.namelist() if not n.endswith(".dist-info/RECORD")}


def test_kiln_trains_and_lists_from_another_folder(installed: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    trained = run([str(installed / "kiln"), "train", "--store", str(store)], cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "stored version" in trained.stdout
    listed = run([str(installed / "kiln"), "models", "--json", "--store", str(store)], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1
    # The infra script is found and runs (status only: the shared services stay as they are).
    infra = run(
        [
            str(installed / "python"),
            "-c",
            "from kiln.infra.engine import run_infra\n"
            "print(run_infra('status', check=False).returncode)",
        ],
        cwd=tmp_path,
    )
    assert infra.returncode == 0, infra.stderr
    assert "No such file" not in infra.stderr


@pytest.mark.e2e
def test_kiln_builds_deploys_and_ups_from_another_folder(installed: Path, tmp_path: Path) -> None:
    """The installed kiln builds with its packaged Dockerfile and serving sources, rolls out
    with its packaged manifests' local twin, and `kiln up` finds its packaged infra script."""
    from kiln.rollout.local import LocalTarget
    from tests.conftest import engine_client

    name = f"kiln-wheel-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {
        "KILN_STORE": str(tmp_path / "store"),
        "KILN_REPOSITORY": f"kiln-test/wheel/{name}",
        "KILN_LOCAL_PORT": str(port),
        "KILN_LOCAL_NAME": name,
        "KILN_TARGET": "local",
    }
    kiln = str(installed / "kiln")
    try:
        trained = run([kiln, "train"], cwd=tmp_path, env=env)
        assert trained.returncode == 0, trained.stderr
        version = trained.stdout.split()[2]  # "stored version <id> (iris)"
        built = run([kiln, "build", version, "-o", "json"], cwd=tmp_path, env=env)
        assert built.returncode == 0, built.stderr
        image = json.loads(built.stdout)["image"]
        registry = os.environ.get("KILN_REGISTRY", "127.0.0.1:5000")
        assert image.startswith(f"{registry}/kiln-test/wheel/{name}/model@sha256:")
        deployed = run([kiln, "deploy", version], cwd=tmp_path, env=env)
        assert deployed.returncode == 0, deployed.stderr
        served = httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=10).json()
        assert served["version"] == version
        # The infrastructure is up (the test command starts it): `kiln up` finds every part
        # running through its packaged script and prints the exports.
        # (no warm runner: it would stay in the shared state dir after the test)
        up = run([kiln, "up", "--no-prefect", "--no-warm"], cwd=tmp_path, env=env)
        assert up.returncode == 0, up.stderr
        assert f"export KILN_REGISTRY={registry}" in up.stdout
    finally:
        client = engine_client(timeout=60)
        LocalTarget(client, port=port, name_prefix=name).stop_all()
        client.close()
