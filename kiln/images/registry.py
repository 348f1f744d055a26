"""Talking to an OCI registry: a thin layer over python-dxf with bounded retries.

python-dxf (a maintained Docker/OCI distribution client) does the protocol: blob pushes,
cross-repository mounts, manifests by tag or digest, deletes. This module adds what kiln
needs around it: one client per registry and repository, retries per kiln/infra/retry.py when
the registry cannot be reached, errors that say what was being done, images read and
written whole as kiln/images/oci.py values, and deletes by digest (for retention).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import requests
from dxf import DXF
from dxf.exceptions import DXFMountFailed

from kiln.config.errors import BuildError
from kiln.images.oci import MANIFEST_TYPES, Image, NotAnImage, sha256_digest
from kiln.images.push_progress import human_bytes
from kiln.infra.retry import RetryPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")

ACCEPT = {"Accept": ", ".join(MANIFEST_TYPES)}


class RegistryError(BuildError):
    """The registry refused a request or could not be reached."""


def is_transient(err: BaseException) -> bool:
    if isinstance(err, requests.ConnectionError | requests.Timeout):
        return True
    response = getattr(err, "response", None)
    return response is not None and response.status_code in {429, 502, 503, 504}


def registry_call(what: str, fn: Callable[[], T], policy: RetryPolicy, sleep=time.sleep) -> T:
    """Call fn; retry transient failures per policy; raise RegistryError naming `what`."""

    def fail(err: Exception, attempts: int) -> Exception:
        if isinstance(err, RegistryError):
            return err
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return RegistryError(f"{what}{tries}: {_describe(err)}")

    return policy.call(what, fn, transient=is_transient, fail=fail, describe=_describe, sleep=sleep)


def _describe(err: BaseException) -> str:
    if isinstance(err, requests.ConnectionError):
        return "registry unreachable (connection refused or reset); is it running?"
    response = getattr(err, "response", None)
    if response is not None:
        body = (response.text or "").strip().replace("\n", " ")[:300]
        return f"HTTP {response.status_code} {body}".strip()
    return f"{type(err).__name__}: {err}"


def split_reference(ref: str) -> tuple[str, str, str]:
    """'host:port/repo/name:tag' or '...@sha256:..' -> (host, repository, tag-or-digest)."""
    if "@" in ref:
        name, reference = ref.split("@", 1)
    else:
        slash = ref.rfind("/")
        colon = ref.rfind(":")
        if colon > slash:
            name, reference = ref[:colon], ref[colon + 1 :]
        else:
            name, reference = ref, "latest"
    host, _, repository = name.partition("/")
    if not repository:
        raise ValueError(f"image reference {ref!r} names no registry host")
    return host, repository, reference


class Registry:
    """One registry (host:port). Plain HTTP for loopback hosts, HTTPS elsewhere."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.insecure = _is_loopback(host) if insecure is None else insecure
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._clients: dict[str, DXF] = {}
        self.bytes_pushed = 0

    def __repr__(self) -> str:
        return f"Registry({self.host!r})"

    def close(self) -> None:
        for client in self._clients.values():
            client.__exit__(None, None, None)
        self._clients.clear()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self, repository: str) -> DXF:
        client = self._clients.get(repository)
        if client is None:
            client = DXF(self.host, repository, insecure=self.insecure, timeout=self.timeout)
            client.__enter__()  # keeps one HTTP session (connection reuse)
            self._clients[repository] = client
        return client

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return registry_call(f"{what} on {self.host}", fn, self.retry)

    # -- manifests -----------------------------------------------------------------------

    def manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str, bytes]:
        """(manifest, digest, raw bytes) for a tag or digest; RegistryError if absent."""

        def get() -> tuple[dict[str, Any], str, bytes]:
            r = self._client(repository)._request("get", "manifests/" + reference, headers=ACCEPT)
            raw = r.content
            digest = r.headers.get("Docker-Content-Digest") or sha256_digest(raw)
            return json.loads(raw), digest, raw

        return self._call(f"reading manifest {repository}:{reference}", get)

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag or digest resolves to, or None when it is not there."""

        def head() -> str | None:
            try:
                r = self._client(repository)._request(
                    "head", "manifests/" + reference, headers=ACCEPT
                )
            except requests.HTTPError as err:
                if err.response is not None and err.response.status_code == 404:
                    return None
                raise
            return r.headers.get("Docker-Content-Digest")

        return self._call(f"looking up {repository}:{reference}", head)

    def put_manifest(self, repository: str, tag: str, raw: bytes, media_type: str) -> str:
        def put() -> str:
            self._client(repository)._request(
                "put", "manifests/" + tag, data=raw, headers={"Content-Type": media_type}
            )
            return sha256_digest(raw)

        digest = self._call(f"pushing manifest {repository}:{tag}", put)
        self.bytes_pushed += len(raw)
        return digest

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete by digest (the registry refuses tags); False when it was already gone."""
        if not digest.startswith("sha256:"):
            raise ValueError(f"delete needs a digest, got {digest!r}")

        def delete() -> bool:
            try:
                self._client(repository)._request("delete", "manifests/" + digest)
            except requests.HTTPError as err:
                if err.response is not None and err.response.status_code == 404:
                    return False
                raise
            return True

        return self._call(f"deleting {repository}@{digest}", delete)

    def tags(self, repository: str) -> list[str]:
        def list_tags() -> list[str]:
            try:
                return list(self._client(repository).list_aliases())
            except requests.HTTPError as err:
                if err.response is not None and err.response.status_code == 404:
                    return []
                raise

        return self._call(f"listing tags of {repository}", list_tags)

    # -- blobs ---------------------------------------------------------------------------

    def blob(self, repository: str, digest: str) -> bytes:
        def pull() -> bytes:
            chunks: Iterable[bytes] = self._client(repository).pull_blob(digest)  # type: ignore[assignment]
            return b"".join(chunks)

        return self._call(f"reading blob {repository}@{digest[:19]}", pull)

    def has_blob(self, repository: str, digest: str) -> bool:
        def head() -> bool:
            try:
                self._client(repository).blob_size(digest)
            except requests.HTTPError as err:
                if err.response is not None and err.response.status_code == 404:
                    return False
                raise
            return True

        return self._call(f"looking up blob {repository}@{digest[:19]}", head)

    def push_blob(self, repository: str, data: bytes, digest: str | None = None) -> str:
        """Upload bytes unless the repository already has them; counts what was sent."""
        digest = digest or sha256_digest(data)
        if self.has_blob(repository, digest):
            return digest

        def push() -> str:
            # DXF hands `data` to requests, which sends bytes whole with a Content-Length
            # (its annotation only names an iterable of chunks).
            client = self._client(repository)
            return client.push_blob(data=data, digest=digest, check_exists=False)  # type: ignore[arg-type]

        self._call(f"pushing blob {repository}@{digest[:19]}", push)
        self.bytes_pushed += len(data)
        log.debug(
            "pushing %s: %s sent (blob %s)",
            repository,
            human_bytes(self.bytes_pushed),
            digest[:19],
        )
        return digest

    def mount_blob(self, repository: str, digest: str, source: str) -> None:
        """Make a blob of `source` available in `repository` without sending it."""
        if repository == source or self.has_blob(repository, digest):
            return

        def mount() -> None:
            try:
                self._client(repository).mount_blob(source, digest)
            except DXFMountFailed as err:
                raise RegistryError(
                    f"mounting {source}@{digest[:19]} into {repository} on {self.host}: "
                    "the registry refused the cross-repository mount"
                ) from err

        self._call(f"mounting {digest[:19]} from {source} into {repository}", mount)

    # -- whole images --------------------------------------------------------------------

    def read_image(self, repository: str, reference: str) -> Image:
        """The image a tag or digest names, as a value whose layers stay in `repository`."""
        manifest, _, _ = self.manifest(repository, reference)
        try:
            config = json.loads(self.blob(repository, manifest["config"]["digest"]))
            return Image(manifest, config, origin=repository)
        except (NotAnImage, KeyError, ValueError) as err:
            raise RegistryError(f"reading image {repository}:{reference}: {err}") from err

    def write_image(self, repository: str, tag: str, image: Image) -> str:
        """Push an image under `tag`: its layers mounted from its origin or uploaded, then its
        config and manifest. Returns the manifest digest."""
        for layer in image.layers:
            digest = layer["digest"]
            if digest in image.blobs:
                self.push_blob(repository, image.blobs[digest], digest)
            elif image.origin:
                self.mount_blob(repository, digest, image.origin)
            elif not self.has_blob(repository, digest):
                raise RegistryError(f"pushing {repository}:{tag}: layer {digest[:19]} is nowhere")
        self.push_blob(repository, image.config_bytes())
        return self.put_manifest(repository, tag, image.manifest_bytes(), image.media_type)

    def ping(self) -> None:
        def get() -> None:
            # No auth callback: the local registry is open (DXF's annotation wants one).
            registry = DXF(self.host, None, insecure=self.insecure, timeout=self.timeout)  # type: ignore[arg-type]
            registry.api_version_check()

        self._call("reaching the registry", get)

    def check_access(self) -> None:
        """One bounded GET /v2/, no retries: run before any work, so an unreachable registry
        or one that wants credentials (kiln's client sends none) is one line up front."""
        scheme = "http" if self.insecure else "https"
        url = f"{scheme}://{self.host}/v2/"
        try:
            response = requests.get(url, timeout=min(self.timeout, 10.0), allow_redirects=False)
        except requests.RequestException as err:
            raise RegistryError(
                f"registry {self.host} is unreachable ({type(err).__name__}); start it with "
                "`kiln up`, or point KILN_REGISTRY at one that runs"
            ) from err
        if response.status_code in (401, 403):
            raise RegistryError(
                f"registry {self.host} refused access (HTTP {response.status_code}: it wants "
                "credentials kiln does not send); use a registry kiln can push to without a "
                "login in KILN_REGISTRY"
            )
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self.host} answered {url} with HTTP {response.status_code}, not an "
                "OCI registry's 200; check KILN_REGISTRY"
            )


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in {"localhost", "[::1]"} or name.startswith("127.")


def manifest_blobs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The config and layer descriptors a manifest references."""
    return [manifest["config"], *manifest.get("layers", [])]
