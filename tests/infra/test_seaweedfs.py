"""SeaweedFS's S3 server as kiln starts it: loopback, signatures checked, own group."""

from __future__ import annotations

import json
import os
import stat
import uuid

import botocore.session
import httpx
import pytest
from botocore.exceptions import ClientError

from kiln.infra.team.seaweedfs import (
    S3Server,
    SeaweedFSError,
    _verify,
    running_seaweedfs,
    start_seaweedfs,
    stop_seaweedfs,
)


def client(server: S3Server, secret: str | None = None):
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=secret or server.secret_key,
    )


def test_the_session_server_stores_objects_and_checks_signatures(seaweedfs):
    key = f"t/{uuid.uuid4().hex}"
    s3 = client(seaweedfs)
    s3.put_object(Bucket=seaweedfs.bucket, Key=key, Body=b"hello")
    assert s3.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read() == b"hello"
    # Anonymous and wrongly signed requests are refused.
    assert httpx.get(f"{seaweedfs.endpoint}/{seaweedfs.bucket}/{key}").status_code == 403
    with pytest.raises(ClientError) as err:
        client(seaweedfs, secret="x" * 40).get_object(Bucket=seaweedfs.bucket, Key=key)
    assert err.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied"}
    assert seaweedfs.endpoint.startswith("http://127.0.0.1:")
    assert seaweedfs.secret_key not in repr(seaweedfs)


def test_a_create_only_write_is_refused_when_the_object_exists(seaweedfs):
    s3 = client(seaweedfs)
    key = f"t/{uuid.uuid4().hex}"
    s3.put_object(Bucket=seaweedfs.bucket, Key=key, Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=seaweedfs.bucket, Key=key, Body=b"2", IfNoneMatch="*")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_start_is_idempotent_and_stop_ends_the_group(tmp_path):
    server = start_seaweedfs(tmp_path, bucket="models")
    try:
        assert start_seaweedfs(tmp_path, bucket="models") == server
        assert running_seaweedfs(tmp_path) == server
        with pytest.raises(SeaweedFSError, match="already runs with bucket 'models'"):
            start_seaweedfs(tmp_path, bucket="other")
        for name in ("credentials.json", "s3.json"):
            mode = stat.S_IMODE((tmp_path / "seaweedfs" / name).stat().st_mode)
            assert mode == 0o600, name
        client(server).put_object(Bucket="models", Key="kept", Body=b"data")
    finally:
        assert stop_seaweedfs(tmp_path)
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)
    assert running_seaweedfs(tmp_path) is None
    assert not stop_seaweedfs(tmp_path)

    # A restart keeps the data and the key pair.
    again = start_seaweedfs(tmp_path, bucket="models")
    try:
        assert (again.access_key, again.secret_key) == (server.access_key, server.secret_key)
        body = client(again).get_object(Bucket="models", Key="kept")["Body"].read()
        assert body == b"data"
    finally:
        stop_seaweedfs(tmp_path)


def test_a_stale_pid_file_never_signals_another_process(tmp_path):
    (tmp_path / "run").mkdir()
    run_info = {"pid": os.getpid(), "endpoint": "http://127.0.0.1:1", "bucket": "kiln"}
    (tmp_path / "run" / "seaweedfs.json").write_text(json.dumps(run_info))
    assert running_seaweedfs(tmp_path) is None
    assert not stop_seaweedfs(tmp_path)  # this test process is alive: not ours to stop


def test_bad_input_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(SeaweedFSError, match="invalid bucket name 'Bad_Bucket'"):
        start_seaweedfs(tmp_path, bucket="Bad_Bucket")
    fake = tmp_path / "weed"
    fake.write_bytes(b"#!/bin/sh\necho not weed\n")
    with pytest.raises(SeaweedFSError, match="expected 8dc07b17|expected 984b6a8a"):
        _verify(fake)
    assert not (tmp_path / "seaweedfs").exists()
