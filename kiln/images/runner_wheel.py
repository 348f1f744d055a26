"""kiln's own wheel and the pipeline's requirements, for the runner image.

From a checkout (`pip install -e .`) the wheel is built from the source tree and the
requirements read from pyproject.toml. From an installed wheel there is no source tree:
the wheel is packed again from the installed files its RECORD lists (the same members, a
new RECORD), and the requirements come from its metadata (Requires-Dist for the extra).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from kiln.config.errors import BuildError

DISTRIBUTION = "kiln"
# Files pip writes at install time: not part of the wheel that was installed.
_INSTALL_ONLY = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}
_EPOCH = (1980, 1, 1, 0, 0, 0)  # a zip's earliest time: the same bytes on every pack


def installed() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise BuildError("kiln is not installed: no checkout and no wheel to build from") from None


def is_editable(dist: importlib.metadata.Distribution) -> bool:
    """An editable install (its files are a checkout's, found through a path hook)."""
    text = dist.read_text("direct_url.json")
    return text is not None and bool(json.loads(text).get("dir_info", {}).get("editable"))


def extra_requirements(dist: importlib.metadata.Distribution, extra: str) -> list[str]:
    """What `kiln[extra]` installs, with kiln's own extras spelled out, for a Linux image
    (the extra's marker is evaluated, then dropped)."""
    found: list[str] = []
    for line in dist.requires or []:
        requirement = Requirement(line)
        if requirement.marker is None or not requirement.marker.evaluate({"extra": extra}):
            continue
        requirement.marker = None
        if canonicalize_name(requirement.name) == DISTRIBUTION:
            for inner in sorted(requirement.extras):
                found.extend(extra_requirements(dist, inner))
        else:
            found.append(str(requirement))
    return found


def repack(dist: importlib.metadata.Distribution, into: Path) -> Path:
    """The installed wheel again, from the files its RECORD lists."""
    files = [f for f in dist.files or [] if _packed(f)]
    if not files:
        raise BuildError("kiln's installed files are not listed (no RECORD): reinstall it")
    info_dir = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    wheel = into / f"{DISTRIBUTION}-{dist.version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(files, key=str):
            data = Path(str(dist.locate_file(path))).read_bytes()
            zf.writestr(zipfile.ZipInfo(path.as_posix(), _EPOCH), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path.as_posix()},sha256={digest.decode()},{len(data)}")
        record.append(f"{info_dir}/RECORD,,")
        zf.writestr(zipfile.ZipInfo(f"{info_dir}/RECORD", _EPOCH), "\n".join(record) + "\n")
    return wheel


def _packed(path: importlib.metadata.PackagePath) -> bool:
    if "__pycache__" in path.parts or path.suffix == ".pyc":
        return False  # compiled at install time
    if path.parts[0].startswith(".."):
        return False  # outside site-packages: the console script
    return not (path.parts[0].endswith(".dist-info") and path.name in _INSTALL_ONLY)
