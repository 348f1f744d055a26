"""A stand-in machine for the shell scripts: a PATH of only the tools they may use, with an
apt-get stand-in that logs its calls (and whether policy-rc.d is in place) instead of
installing anything."""

from __future__ import annotations

import shutil
from pathlib import Path


def make_machine(
    tmp_path: Path, tools: tuple[str, ...], apt_stand_in: str, **env: str
) -> dict[str, str]:
    """The environment of a machine with just `tools` and the apt-get stand-in on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    apt = bin_dir / "apt-get"
    apt.write_text(apt_stand_in)
    apt.chmod(0o755)
    return {
        "PATH": str(bin_dir),
        "HOME": str(tmp_path),
        "APT_LOG": str(tmp_path / "apt.log"),
        "INFRA_POLICY_RC_D": str(tmp_path / "policy-rc.d"),
        **env,
    }
