"""scripts/setup.sh's PostgreSQL step (`scripts/setup.sh postgres`) on a machine without it.

As in test_infra_install.py, PATH holds a stand-in for apt-get that logs its calls and fails
when told to, the way apt and dpkg do: an `E:` line on stderr and a dpkg error on stdout.
The other commands the step runs are the machine's own.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.scripts.machine import make_machine

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "setup.sh"
TOOLS = ("bash", "chmod", "rm", "cat", "dirname")

APT_STAND_IN = """#!/bin/bash
echo "$* | policy:$( [[ -e $INFRA_POLICY_RC_D ]] && echo yes || echo no )" >>"$APT_LOG"
if [[ -n ${APT_FAIL_ON:-} && "$*" == *"$APT_FAIL_ON"* ]]; then
    echo "dpkg: error processing package postgresql-15 (--configure):"
    echo "E: Sub-process /usr/bin/dpkg returned an error code (1)" >&2
    exit 100
fi
echo "Reading package lists..."
echo "Setting up postgresql-15 ..."
"""


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, str]:
    initdb = str(tmp_path / "absent" / "initdb")
    return make_machine(tmp_path, TOOLS, APT_STAND_IN, SETUP_PG_INITDB=initdb)


def setup_postgres(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [env["PATH"] + "/bash", str(SCRIPT), "postgres"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_working_install_is_quiet_and_leaves_no_policy_behind(machine) -> None:
    result = setup_postgres(machine)

    assert result.returncode == 0, result.stderr
    calls = Path(machine["APT_LOG"]).read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["update", "install"]
    assert "postgresql-15" in calls[1] and all(c.endswith("policy:yes") for c in calls)
    assert not Path(machine["INFRA_POLICY_RC_D"]).exists()
    assert "Setting up" not in result.stdout + result.stderr  # apt's normal output stays quiet


def test_apt_errors_are_shown_even_those_on_stdout(machine) -> None:
    policy = Path(machine["INFRA_POLICY_RC_D"])
    policy.write_text("#!/bin/sh\n# the image's own\nexit 101\n")

    result = setup_postgres({**machine, "APT_FAIL_ON": "postgresql-15"})

    assert result.returncode == 1
    assert "E: Sub-process /usr/bin/dpkg returned an error code (1)" in result.stderr
    assert "dpkg: error processing package postgresql-15" in result.stderr
    assert "setup: error: apt-get failed (status 100) installing postgresql-15" in result.stderr
    assert policy.read_text() == "#!/bin/sh\n# the image's own\nexit 101\n"  # kept as it was


def test_an_installed_postgres_calls_no_apt(machine, tmp_path: Path) -> None:
    initdb = tmp_path / "initdb"
    initdb.write_text("#!/bin/bash\n")
    initdb.chmod(0o755)

    result = setup_postgres({**machine, "SETUP_PG_INITDB": str(initdb)})

    assert result.returncode == 0, result.stderr
    assert not Path(machine["APT_LOG"]).exists()
