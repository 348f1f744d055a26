"""No URL user info, key or password from the command line reaches any output, through the
real `kiln` entry point (issue 22, item 10): one redaction at the CLI's error boundary."""

from __future__ import annotations

import pytest

from tests.support.factories import run_kiln

SECRETS = ("SECRET", "AKIAKEY1", "PASSWORD9")


@pytest.mark.parametrize(
    ("data", "status", "still_says"),
    [
        # a mistyped scheme: the usage error quotes the option's value
        ("htps://user:SECRET@host/x.csv", 2, "unknown URL scheme 'htps://'"),
        ("htps://AKIAKEY1:PASSWORD9@host/x.csv", 2, "'htps://***@host/x.csv'"),
        # the S3 client quotes user info as part of the bucket name: "KEY:SECRET@bucket"
        ("s3://KEY:SECRET@bucket/x.csv", 1, 'Invalid bucket name "***@bucket"'),
        ("s3://AKIAKEY1:PASSWORD9@bucket/x.csv", 1, "cannot read"),
    ],
)
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_credentials_in_data_never_reach_the_output(tmp_path, data, status, still_says, debug):
    args = ("--debug",) if debug else ()
    # Nothing listens on this port: nothing must leave the machine either way.
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:18409", "KILN_RETRIES": "0"}
    result = run_kiln(*args, "train", "--data", data, store=tmp_path / "store", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == status, output
    assert still_says in result.stderr
    assert [s for s in SECRETS if s in output] == []
    if debug and status == 1:
        assert "Traceback" in result.stderr  # the traceback is printed, scrubbed
