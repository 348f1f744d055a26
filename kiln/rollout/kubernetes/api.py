"""A thin REST client for the few Kubernetes objects kiln ships, over the official client.

Plain dicts in and out (the JSON the API server sends), so the same code runs against a
real cluster and against the emulated API server the tests use. Errors come back as
RolloutError, or TransientError for what a retry can cure (the API server unreachable,
409 Conflict on a stale precondition, 429, 5xx).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kiln.config.errors import RolloutError
from kiln.rollout.smoke import Reply
from kiln.rollout.target import TransientError

log = logging.getLogger(__name__)

FIELD_MANAGER = "kiln"
APPLY_PATCH = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"

# kind -> (api group path, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
}


class ApiStatusError(RolloutError):
    """The API server answered an error status (kept, so callers can tell 404 from 409)."""

    def __init__(self, message: str, status: int, body: Any) -> None:
        super().__init__(message)
        self.status, self.body = status, body


class ApiTransientError(ApiStatusError, TransientError):
    """409, 429 or a 5xx: the same call may succeed later."""


class ApiUnreachable(TransientError):
    """No answer from the API server at all."""


def make_api_client(context: str | None = None, kubeconfig: str | None = None) -> client.ApiClient:
    """In a pod: the pod's service account. Elsewhere: the kubeconfig, at `context` if given."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and kubeconfig is None and context is None:
        config.load_incluster_config()
        return client.ApiClient()
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except config.ConfigException as err:
        where = kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config")
        raise RolloutError(
            f"connecting to Kubernetes (kubeconfig {where}, context {context or 'current'}): {err}"
        ) from err


@dataclass
class KubeApi:
    """JSON calls to one API server through `api_client`, each bounded by `request_timeout`."""

    api_client: client.ApiClient
    request_timeout: float = 30.0

    @property
    def host(self) -> str:
        return self.api_client.configuration.host

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> Reply:
        """One raw call; the client raises ApiException for non-2xx statuses."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method_, url, headers, body_, _post = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method_, url, header_params=headers, body=body_, _request_timeout=self.request_timeout
        )
        response.read()
        return Reply(response.status, response.data or b"")

    def call(
        self, method: str, path: str, body: Any = None, *, missing_ok: bool = False, **kw: Any
    ) -> dict[str, Any] | None:
        """A JSON API call. A 404 is None when `missing_ok`, an ApiStatusError otherwise."""
        data: Any
        try:
            response = self.request(method, path, body, **kw)
            status, data = response.status, response.body
        except ApiException as err:  # raised by the client for non-2xx statuses
            status, data = err.status or 0, err.body
        except (OSError, urllib3.exceptions.HTTPError) as err:
            raise ApiUnreachable(f"{method} {path}: {err}") from err
        if status == 404 and missing_ok:
            return None
        if status >= 400 or status == 0:
            message = f"{method} {path}: {status} {status_message(data)}"
            transient = status in (409, 429) or status >= 500
            raise (ApiTransientError if transient else ApiStatusError)(message, status, data)
        return json.loads(data) if data else {}

    def raw(self, method: str, path: str, body: Any = None) -> Reply:
        """A call whose error statuses are answers too (the proxy: the server's own replies)."""
        try:
            return self.request(method, path, body)
        except ApiException as err:
            data = err.body.encode() if isinstance(err.body, str) else (err.body or b"")
            return Reply(err.status or 0, data)
        except (OSError, urllib3.exceptions.HTTPError) as err:
            raise ApiUnreachable(f"{method} {path}: {err}") from err


def object_path(kind: str, name: str | None, namespace: str | None) -> str:
    prefix, plural, namespaced = KINDS[kind]
    path = prefix
    if namespaced:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    return path


def status_message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        return json.loads(body).get("message", body)
    except (TypeError, ValueError, AttributeError):
        return str(body)[:300]


def is_field_conflict(err: ApiStatusError) -> bool:
    """A server-side apply conflict: another field manager owns a field kiln sets."""
    try:
        causes = json.loads(err.body).get("details", {}).get("causes") or []
    except (TypeError, ValueError, AttributeError):
        return False
    return any(cause.get("reason") == "FieldManagerConflict" for cause in causes)
