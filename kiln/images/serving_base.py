"""The serving base: what every model image shares, its content key, and its build context.

The key hashes everything that goes into the base (Dockerfile.serve, serving/, the server's
requirements, how wheels are prepared, the base image and the architecture), so the base
is built once per change of server code or dependencies. Wheels are downloaded on the host:
builds here cannot reach PyPI.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

from kiln.config.errors import BuildError
from kiln.images.contents import read_model_files
from kiln.images.oci import deterministic_tar
from kiln.infra.resources import package_dir, resource_path

log = logging.getLogger(__name__)

# Shipped in the package, so an installed kiln (pip install .) builds images from any folder.
DOCKERFILE = resource_path("Dockerfile.serve")
SERVING_DIR = package_dir("serving")
# In a checkout the server's requirements come from pyproject.toml; installed, from metadata.
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# Declared by onnxruntime (and friends) but never imported by the server at run time:
# measured with `import onnxruntime; InferenceSession(...).run(...)` and sys.modules.
UNUSED_DISTRIBUTIONS = frozenset(
    {"sympy", "mpmath", "protobuf", "flatbuffers", "coloredlogs", "humanfriendly", "packaging"}
)

# Bump when the host-side wheel preparation changes what lands in the image (cache + base key).
# The left-out distributions are part of it: changing that set changes the wheels.
WHEEL_PREP = "strip-debug,without:" + ",".join(sorted(UNUSED_DISTRIBUTIONS))


# ---------------------------------------------------------------------------- base key, wheels


def serve_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """kiln's `serve` extra: from the checkout's pyproject.toml, else the installed metadata."""
    if pyproject.exists():
        data = tomllib.loads(pyproject.read_text())
        if data.get("project", {}).get("name") == "kiln":
            return list(data["project"]["optional-dependencies"]["serve"])
    return installed_extra_requirements("kiln", "serve")


def installed_extra_requirements(distribution: str, extra: str) -> list[str]:
    """An extra's requirements from installed metadata, without the `extra == ...` marker."""
    found = []
    for line in importlib.metadata.requires(distribution) or []:
        requirement, _, marker = line.partition(";")
        clauses = [c.strip() for c in marker.split(" and ")] if marker.strip() else []
        wanted = f'extra == "{extra}"'
        if wanted not in clauses:
            continue
        rest = " and ".join(c for c in clauses if c != wanted)
        found.append(f"{requirement.strip()}; {rest}" if rest else requirement.strip())
    if not found:
        raise BuildError(f"no requirements for the {extra!r} extra of installed {distribution}")
    return found


def _serving_files(serving_dir: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(serving_dir.rglob("*")):
        rel = path.relative_to(serving_dir)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
            files[rel.as_posix()] = path.read_bytes()
    return files


def base_key(
    *,
    base_image: str,
    dockerfile: Path = DOCKERFILE,
    serving_dir: Path = SERVING_DIR,
    requirements: Iterable[str] | None = None,
) -> str:
    """Content hash of what goes into the serving base: tag `base-<key>` in the registry."""
    h = hashlib.sha256()

    def part(name: str, data: bytes) -> None:
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)

    part("base-image", base_image.encode())
    part("platform", _arch().encode())
    part("dockerfile", dockerfile.read_bytes())
    reqs = serve_requirements() if requirements is None else list(requirements)
    part("requirements", "\n".join(sorted(reqs)).encode())
    part("excluded", "\n".join(sorted(UNUSED_DISTRIBUTIONS)).encode())
    part("wheel-prep", WHEEL_PREP.encode())
    for name, data in _serving_files(serving_dir).items():
        part(f"serving/{name}", data)
    return "base-" + h.hexdigest()[:16]


def _arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _distribution(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-", 1)[0]).lower()


def download_wheels(
    requirements: list[str], cache_dir: Path, *, python_version: str = "3.11"
) -> list[Path]:
    """Wheels for the server (host-side pip: builds cannot reach PyPI), cached by spec."""
    arch = _arch()
    key = hashlib.sha256(
        "\n".join([python_version, arch, WHEEL_PREP, *sorted(requirements)]).encode()
    ).hexdigest()[:16]
    target = cache_dir / key
    if (target / ".complete").exists():
        return sorted(target.glob("*.whl"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    abi = "cp" + python_version.replace(".", "")
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]
    platforms += [f"manylinux2014_{arch}", f"linux_{arch}"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--dest",
        str(tmp),
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--abi",
        abi,
        *[arg for p in platforms for arg in ("--platform", p)],
        *requirements,
    ]
    log.info("downloading server wheels into %s", target)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"downloading server wheels: {proc.stderr.strip()[-800:]}")
    for wheel in tmp.glob("*.whl"):
        if _distribution(wheel) in UNUSED_DISTRIBUTIONS:
            wheel.unlink()
        else:
            strip_wheel(wheel)
    (tmp / ".complete").write_text("\n".join(sorted(requirements)) + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.rename(tmp, target)
    return sorted(target.glob("*.whl"))


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def strip_wheel(wheel: Path, strip: str | None = None) -> int:
    """Drop debug sections from a wheel's shared libraries (uvloop's are large: docs/benchmarks.md).

    `strip --strip-debug` keeps every symbol a loader needs. RECORD is rewritten with the
    new hashes, so the wheel stays valid. Returns the bytes saved (0 without binutils).
    """
    strip = strip or shutil.which("strip")
    if not strip:
        return 0
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        members = {info.filename: zf.read(info) for info in infos}
    # Not the libraries auditwheel vendored under <name>.libs/: patchelf rewrote those, and
    # strip breaks them ("ELF load command address/offset not page-aligned").
    libs = [n for n in members if re.search(r"\.so(\.[0-9.]+)?$", n) and ".libs/" not in n]
    if not libs:
        return 0
    saved = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in libs:
            path = Path(tmp) / "lib.so"
            path.write_bytes(members[name])
            if subprocess.run([strip, "--strip-debug", str(path)], capture_output=True).returncode:
                continue
            stripped = path.read_bytes()
            saved += len(members[name]) - len(stripped)
            members[name] = stripped
    if not saved:
        return 0
    record = next(n for n in members if n.endswith(".dist-info/RECORD"))
    lines = []
    for line in members[record].decode().splitlines():
        name = line.split(",", 1)[0]
        if name in libs:
            line = f"{name},{_record_hash(members[name])},{len(members[name])}"
        lines.append(line)
    members[record] = ("\n".join(lines) + "\n").encode()
    tmp_wheel = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp_wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in infos:
            zf.writestr(info, members[info.filename])
    os.replace(tmp_wheel, wheel)
    return saved


# ---------------------------------------------------------------------------- build context


def build_context(
    model_dir: Path,
    wheels: list[Path],
    *,
    dockerfile: Path = DOCKERFILE,
    serving_dir: Path = SERVING_DIR,
) -> io.BytesIO:
    """The engine's build context as an uncompressed, deterministic tar."""
    files: dict[str, bytes] = {"Dockerfile.serve": dockerfile.read_bytes()}
    for name, data in _serving_files(serving_dir).items():
        files[f"serving/{name}"] = data
    for wheel in wheels:
        files[f"wheels/{wheel.name}"] = wheel.read_bytes()
    for name, data in read_model_files(model_dir).items():
        files[f"model/{name.split('/', 1)[1]}"] = data
    return io.BytesIO(deterministic_tar(files, mtime=0))
