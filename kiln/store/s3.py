"""The artifact store's S3 pieces: client settings and conditional writes.

fsspec has no words for "write only if unchanged since I read it", which is what keeps two
concurrent writers from losing each other's update; S3 has (`If-None-Match: *` to create
only, `If-Match: <etag>` to replace only what was read), so these helpers speak it through
s3fs's own client and its configuration (endpoint and key pair from the usual AWS variables).
"""

from __future__ import annotations

import errno
import os
from typing import Any

import fsspec.asyn

S3_PROTOCOLS = ("s3", "s3a")

# Bounded: a store that cannot be reached fails in seconds with one error, not minutes.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60
DEFAULT_ATTEMPTS = 4  # KILN_RETRIES (3) + 1, as every other retried call


def storage_options(protocol: str, attempts: int = DEFAULT_ATTEMPTS) -> dict[str, Any]:
    """What kiln passes to fsspec for a store URL of this protocol; `attempts` bounds each
    S3 call (botocore's standard retries, with its jittered exponential backoff)."""
    if protocol in S3_PROTOCOLS:
        # Listings are never cached: other writers (workers, CLIs) change the store.
        return {
            "config_kwargs": {
                "connect_timeout": CONNECT_TIMEOUT,
                "read_timeout": READ_TIMEOUT,
                "retries": {"max_attempts": attempts, "mode": "standard"},
                "region_name": os.environ.get("AWS_DEFAULT_REGION") or None,
            },
            "use_listings_cache": False,
            **server_identity(),
        }
    return {}


def server_identity() -> dict[str, Any]:
    """The endpoint and credentials the environment names, passed explicitly (s3fs would
    read the same values from it) so that fsspec's client cache is keyed by them.

    One client per server and key pair in a process: each new one makes botocore read its
    S3 model again (docs/benchmarks.md), and a flow run opens the store in several steps. A changed
    endpoint or key pair gets a client of its own, never one made for another server.
    """
    identity = {
        "endpoint_url": os.environ.get("AWS_ENDPOINT_URL"),
        "key": os.environ.get("AWS_ACCESS_KEY_ID"),
        "secret": os.environ.get("AWS_SECRET_ACCESS_KEY"),
        "token": os.environ.get("AWS_SESSION_TOKEN"),
        "profile": os.environ.get("AWS_PROFILE"),
    }
    return {name: value for name, value in identity.items() if value}


def transport_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the server could not be reached or answered badly."""
    from botocore.exceptions import BotoCoreError

    return (BotoCoreError,)


def read_with_etag(fs: Any, path: str) -> tuple[bytes, str] | None:
    """An object's bytes and the ETag of exactly those bytes, or None when it is absent."""
    bucket, key, _ = fs.split_path(path)

    async def get() -> tuple[bytes, str]:
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        try:
            return await response["Body"].read(), response["ETag"]
        finally:
            response["Body"].close()

    try:
        return fsspec.asyn.sync(fs.loop, get)
    except FileNotFoundError:
        return None


def write_if(fs: Any, path: str, data: bytes, etag: str | None) -> bool:
    """Write `data` only if the object still has `etag` (None: only if it does not exist).

    False when another writer got there first.
    """
    condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
    try:
        fs.pipe_file(path, data, **condition)
    except OSError as err:
        if precondition_failed(err):
            return False
        raise
    return True


def precondition_failed(err: BaseException) -> bool:
    """Whether s3fs's error is the server's 412 (its type depends on the server's wording)."""
    if isinstance(err, FileExistsError):
        return True
    cause = err.__cause__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = response.get("Error", {}).get("Code")
        # A create-only write some servers answer with 409 while another create is in flight.
        return status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")
    return isinstance(err, OSError) and err.errno == errno.EINVAL and "Precondition" in str(err)
