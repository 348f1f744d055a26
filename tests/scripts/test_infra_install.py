"""scripts/infra.sh's install path on a machine where packages are missing.

The real apt-get cannot run in a test (it would install system packages), so PATH holds a
stand-in for it: a small script that logs each call, notes whether policy-rc.d exists at
that moment, and fails when told to, printing an error like apt's. Every other command the
install path runs is the machine's own (linked into the same folder), and none of the
packages' commands (podman, runc, ...) is on PATH, so the script sees them all missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.scripts.machine import make_machine

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "infra.sh"
# What the install path itself runs besides bash builtins.
TOOLS = ("bash", "chmod", "rm", "cat")

APT_STAND_IN = """#!/bin/bash
# stands in for apt-get: logs the call and whether policy-rc.d is in place, may fail
echo "$* | policy:$( [[ -e $INFRA_POLICY_RC_D ]] && cat "$INFRA_POLICY_RC_D" | tr '\\n' ' ' )" \
    >>"$APT_LOG"
if [[ -n ${APT_FAIL_ON:-} && "$*" == *"$APT_FAIL_ON"* ]]; then
    echo "E: Unable to locate package $APT_FAIL_ON" >&2
    exit 100
fi
echo "Reading package lists..."
"""


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, str]:
    # `tr` for the stand-in's own log line
    tools = (*TOOLS, "tr")
    return make_machine(tmp_path, tools, APT_STAND_IN, KILN_STATE_DIR=str(tmp_path / "state"))


def install(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    bash = env["PATH"] + "/bash"
    return subprocess.run(
        [bash, str(SCRIPT), "install"], env=env, capture_output=True, text=True, timeout=60
    )


def apt_calls(env: dict[str, str]) -> list[str]:
    return Path(env["APT_LOG"]).read_text().splitlines()


def test_an_existing_policy_rc_d_is_kept_and_the_install_succeeds(machine) -> None:
    policy = Path(machine["INFRA_POLICY_RC_D"])
    policy.write_text("#!/bin/sh\n# the image's own\nexit 101\n")

    result = install(machine)

    assert result.returncode == 0, result.stderr  # was 1: `((created_policy)) && rm` last
    assert "installing podman runc docker-registry" in result.stderr
    assert policy.read_text() == "#!/bin/sh\n# the image's own\nexit 101\n"
    calls = apt_calls(machine)
    assert [c.split(" | ")[0].split()[0] for c in calls] == ["update", "install", "install"]
    assert "runc" in calls[1] and "podman" in calls[2] and "buildah" in calls[2]
    assert all("the image's own" in c for c in calls)
    assert "Reading package lists" not in result.stdout + result.stderr  # quiet when it works


def test_a_policy_rc_d_it_creates_is_there_during_install_and_gone_after(machine) -> None:
    result = install(machine)

    assert result.returncode == 0, result.stderr
    assert all("policy:#!/bin/sh exit 101" in c for c in apt_calls(machine))
    assert not Path(machine["INFRA_POLICY_RC_D"]).exists()


def test_apt_errors_are_shown_and_its_policy_removed(machine) -> None:
    env = {**machine, "APT_FAIL_ON": "docker-registry"}

    result = install(env)

    assert result.returncode == 1
    assert "E: Unable to locate package docker-registry" in result.stderr
    assert "infra: error: apt-get failed (status 100)" in result.stderr
    assert not Path(machine["INFRA_POLICY_RC_D"]).exists()


def test_nothing_missing_calls_no_apt(machine) -> None:
    bin_dir = Path(machine["PATH"])
    for command in ("podman", "runc", "docker-registry", "debootstrap", "skopeo", "buildah"):
        stand_in = bin_dir / command
        stand_in.write_text("#!/bin/bash\nexit 0\n")  # stands in for an installed package
        stand_in.chmod(0o755)
    (bin_dir / "curl").symlink_to(shutil.which("curl") or "/usr/bin/curl")

    result = install(machine)

    assert result.returncode == 0, result.stderr
    assert not Path(machine["APT_LOG"]).exists()
    assert "installing" not in result.stderr
