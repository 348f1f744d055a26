"""A thin REST client for the few Kubernetes objects kiln ships, over the official client.

Plain dicts in and out (the JSON the API server sends), so the same code runs against a
real cluster and against the emulated API server the tests use.
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

from flows.errors import RolloutError
from flows.rollout.smoke import Reply

log = logging.getLogger(__name__)

FIELD_MANAGER = "kiln"
MERGE_PATCH = "application/merge-patch+json"

# kind -> (api group path, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Service": ("/api/v1", "services", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
}


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

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any] | None:
        """A JSON API call; None on 404, RolloutError on any other failure."""
        try:
            response = self.request(method, path, body, **kw)
        except ApiException as err:  # raised by the client for non-2xx statuses
            if err.status == 404:
                return None
            raise RolloutError(f"{method} {path}: {err.status} {status_message(err.body)}") from err
        except (OSError, urllib3.exceptions.HTTPError) as err:
            raise RolloutError(f"{method} {path}: {err}") from err
        if response.status == 404:
            return None
        if response.status >= 400:
            message = status_message(response.body)
            raise RolloutError(f"{method} {path}: {response.status} {message}")
        return json.loads(response.body) if response.body else {}

    def raw(self, method: str, path: str, body: Any = None) -> Reply:
        """A call whose error statuses are answers too (the proxy: the server's own replies)."""
        try:
            return self.request(method, path, body)
        except ApiException as err:
            data = err.body.encode() if isinstance(err.body, str) else (err.body or b"")
            return Reply(err.status or 0, data)
        except (OSError, urllib3.exceptions.HTTPError) as err:
            raise RolloutError(f"{method} {path}: {err}") from err


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
