"""Files kiln reads at run time, shipped inside its package: Dockerfile.serve, the k8s/
base and scripts/infra.sh.

In a checkout the entries here are symlinks to the files at the top of the repository
(where people edit them and `kubectl apply -k k8s/` reads them); a wheel carries copies
(package data in pyproject.toml). Code finds them through `resource_path`, never relative
to the source tree, so an installed kiln works from any folder.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from kiln.config.errors import KilnError


def resource_path(name: str) -> Path:
    """A shipped file or folder as a real path (kiln is installed as files, not a zip)."""
    entry = files(__name__).joinpath(name)
    if not isinstance(entry, Path):
        raise KilnError(f"kiln's {name} is not on the file system ({entry}): install kiln unzipped")
    if not entry.exists():
        raise KilnError(f"kiln's {name} is missing from {entry.parent}: reinstall kiln")
    return entry.resolve()


def package_dir(package: str) -> Path:
    """Where an installed package's files are (the serving sources go into images)."""
    entry = files(package)
    if not isinstance(entry, Path):
        raise KilnError(f"package {package} is not on the file system ({entry})")
    return entry
