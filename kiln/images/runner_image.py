"""The runner image: kiln and the pipeline's dependencies, for a Kubernetes work pool's Jobs.

Built from Dockerfile.runner by the container engine (the same engine API the serving
image's engine builder uses) and pushed; its tag is a content key of everything that goes
in (the Dockerfile, every wheel, the base image), so an unchanged runner is found in the
registry and not built again. The wheels are made on the host: `pip wheel` builds the
source-only dependencies (python-dxf) and fetches the rest; builds cannot reach PyPI here.
"""

from __future__ import annotations

import email
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from kiln.config.errors import BuildError
from kiln.images import runner_wheel
from kiln.images.builders.engine import check_stream, engine_push
from kiln.images.registry import Registry
from kiln.infra.resources import resource_path

log = logging.getLogger(__name__)

DOCKERFILE = "Dockerfile.runner"
PYTHON = "3.11"  # the base image's Python (python:3.11-slim)
# kiln's source tree, when kiln runs from a checkout (`pip install -e .`): its wheel is built
# from there; from an installed wheel it is packed again (kiln/images/runner_wheel.py).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunnerImage:
    """A pushed runner image: `reference` is repository@digest, what a job template takes."""

    reference: str
    digest: str
    tag: str
    built: bool  # False: the registry already held this content key
    seconds: float


# ---------------------------------------------------------------------------- wheels


def is_checkout(root: Path = SOURCE_ROOT) -> bool:
    """Whether kiln runs from its source tree (else from an installed wheel: the runner's
    wheel and requirements then come from the installed distribution, runner_wheel.py)."""
    try:
        name = tomllib.loads((root / "pyproject.toml").read_text()).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return name == "kiln"


def pipeline_requirements(root: Path) -> list[str]:
    """The `pipeline` extra with its `kiln[serve]` spelled out: what the runner installs."""
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    found: list[str] = []
    for requirement in extras["pipeline"]:
        if requirement.replace(" ", "").startswith("kiln["):
            for extra in requirement.split("[", 1)[1].split("]", 1)[0].split(","):
                found.extend(extras[extra.strip()])
        else:
            found.append(requirement)
    return found


def runner_requirements(root: Path, dist: Any) -> list[str]:
    """The pipeline's requirements: from the checkout's pyproject.toml, or (`dist`, an
    installed kiln) from the wheel's metadata."""
    if dist is None:
        return pipeline_requirements(root)
    return runner_wheel.extra_requirements(dist, "pipeline")


def pip(args: list[str], what: str, timeout: float = 1800) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: pip took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise BuildError(f"{what}: {proc.stderr.strip()[-800:]}")


def dependency_wheels(requirements: list[str], cache_dir: Path) -> Path:
    """Every dependency of the pipeline as a wheel, in a folder cached by the requirements."""
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16]
    target = cache_dir / f"runner-{key}"
    if (target / "requirements.txt").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".runner-{key}-", dir=cache_dir))
    log.info("building the runner's dependency wheels into %s", target)
    try:
        pip(["wheel", "--quiet", "--wheel-dir", str(tmp), *requirements], "pip wheel")
        # The host's pip resolved markers for the host's Python; the image's may be an older
        # 3.11.x with dependencies of its own (redis wants async-timeout below 3.11.3).
        for _ in range(5):
            missing = older_python_needs(tmp)
            if not missing:
                break
            pip(["wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp), *missing], "pip wheel")
    except BuildError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Written last: its presence marks a complete folder.
    (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.rename(tmp, target)
    return target


def older_python_needs(wheels: Path, python: str = PYTHON + ".0") -> list[str]:
    """Requirements of these wheels that an older CPython `python` needs and no wheel here
    provides (their markers evaluated for that Python, extras left out)."""
    environment = {"python_full_version": python, "python_version": PYTHON, "extra": ""}
    have = {canonicalize_name(w.name.split("-", 1)[0]) for w in wheels.glob("*.whl")}
    needed: dict[str, str] = {}
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = email.message_from_bytes(zf.read(name))
        for line in metadata.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            key = canonicalize_name(requirement.name)
            if key not in have:
                requirement.marker = None
                needed[key] = str(requirement)
    return sorted(needed.values())


def kiln_wheel(root: Path, into: Path) -> Path:
    """kiln's own wheel from its source tree (no dependencies, no network)."""
    pip(
        ["wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(into), str(root)],
        "building kiln's wheel",
        timeout=600,
    )
    wheels = sorted(into.glob("kiln-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"building kiln's wheel: expected one kiln wheel in {into}, not {wheels}")
    return wheels[0]


def wheel_digest(wheel: Path) -> str:
    """A wheel's content (member names and bytes), not its zip metadata: stable across builds."""
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if info.filename.endswith(".dist-info/RECORD"):
                continue  # hashes of the other members, already counted
            h.update(f"{info.filename}\0{info.file_size}\0".encode())
            h.update(zf.read(info))
    return h.hexdigest()


def runner_key(dockerfile: bytes, deps: Path, kiln: Path, base_image: str) -> str:
    h = hashlib.sha256()
    h.update(b"base\0" + base_image.encode() + b"\0dockerfile\0" + dockerfile)
    for wheel in sorted(deps.glob("*.whl")):
        h.update(f"\0{wheel.name}\0{wheel.stat().st_size}".encode())
    h.update(b"\0requirements\0" + (deps / "requirements.txt").read_bytes())
    h.update(b"\0kiln\0" + wheel_digest(kiln).encode())
    return "runner-" + h.hexdigest()[:16]


# ---------------------------------------------------------------------------- context, build


@contextmanager
def build_context(dockerfile: Path, deps: Path, kiln: Path) -> Iterator[IO[bytes]]:
    """The engine's build context as a tar in a temporary file (the wheels are large)."""

    def add(tar: tarfile.TarFile, path: Path, name: str) -> None:
        info = tar.gettarinfo(str(path), arcname=name)
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        info.mode = 0o644
        with path.open("rb") as fh:
            tar.addfile(info, fh)

    with tempfile.TemporaryFile() as fh:
        with tarfile.open(fileobj=fh, mode="w") as tar:
            add(tar, dockerfile, DOCKERFILE)
            for wheel in sorted(deps.glob("*.whl")):
                add(tar, wheel, f"wheels/{wheel.name}")
            add(tar, deps / "requirements.txt", "wheels/requirements.txt")
            add(tar, kiln, f"kiln/{kiln.name}")
        fh.seek(0)
        yield fh


def with_tail(
    stream: Iterable[dict[str, Any]], tail: list[str], keep: int = 8
) -> Iterator[dict[str, Any]]:
    """The stream as is, keeping its last `keep` output lines in `tail`."""
    for chunk in stream:
        line = str(chunk.get("stream", "")).strip()
        if line:
            tail.append(line[-300:])
            del tail[:-keep]
        yield chunk


def build_runner(
    client_factory: Any,
    registry: Registry,
    repository: str,
    *,
    base_image: str,
    cache_dir: Path,
    force: bool = False,
    root: Path = SOURCE_ROOT,
) -> RunnerImage:
    """Build (unless the registry holds its content key) and push the runner image.

    `client_factory` makes the engine client, called only when a build is needed.
    """
    began = time.perf_counter()
    dist = None if is_checkout(root) else runner_wheel.installed()
    dockerfile = resource_path(DOCKERFILE)
    deps = dependency_wheels(runner_requirements(root, dist), cache_dir)
    with tempfile.TemporaryDirectory(prefix="kiln-runner-") as tmp:
        kiln = kiln_wheel(root, Path(tmp)) if dist is None else runner_wheel.repack(dist, Path(tmp))
        tag = runner_key(dockerfile.read_bytes(), deps, kiln, base_image)
        name = f"{registry.host}/{repository}"
        digest = None if force else registry.manifest_digest(repository, tag)
        built = digest is None
        if built:
            client = client_factory()
            tail: list[str] = []
            log.info("building the runner image %s:%s", name, tag)
            with build_context(dockerfile, deps, kiln) as context:
                stream = client.api.build(
                    fileobj=context,
                    custom_context=True,
                    dockerfile=DOCKERFILE,
                    tag=f"{name}:{tag}",
                    target="runner",
                    buildargs={"BASE_IMAGE": base_image},
                    rm=True,
                    forcerm=True,
                    pull=False,
                    decode=True,
                )
                try:
                    check_stream(f"building {name}:{tag}", with_tail(stream, tail))
                except BuildError as err:
                    # The failing step's own output says why (pip's message, a missing file).
                    raise BuildError(f"{err}; its last output: {' | '.join(tail)}") from None
            engine_push(client, name, tag, registry)
            digest = registry.manifest_digest(repository, tag)
            if digest is None:
                raise BuildError(f"pushing {name}:{tag}: the registry does not show the tag")
    assert digest is not None  # found, or pushed and checked above
    return RunnerImage(
        reference=f"{name}@{digest}",
        digest=digest,
        tag=tag,
        built=built,
        seconds=time.perf_counter() - began,
    )
