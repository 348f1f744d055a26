"""The server logs of the pods of one model name's Deployment, read through the API server.

`GET /api/v1/namespaces/NS/pods/POD/log?container=server` is what `kubectl logs` calls; the
API server relays the kubelet's text stream. Connecting is bounded by the request timeout,
and so is every read of a plain read; a follow stream (`-f`) waits for new lines as long
as the pod runs, until it ends or the user stops it. Lines are passed on as they arrive,
never gathered whole: a line longer than MAX_LINE is passed on in pieces.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3

from kiln.config.errors import RolloutError
from kiln.rollout.kubernetes.api import KubeApi, object_path, status_message
from kiln.rollout.kubernetes.manifests import CONTAINER_NAME

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_LINE = 64 * 1024
MAX_STREAMS = 10  # pods followed at once (kubectl's own limit is 5 by default)
ERROR_BODY = 64 * 1024  # of an error answer, enough for its Status message


class PodLogError(RolloutError):
    """The API server could not be reached, or refused or failed a log request."""


@dataclass(frozen=True)
class LogRequest:
    follow: bool = False
    tail: int | None = 100  # lines from the end of each pod's log; None: all of it


def deployment_pods(api: KubeApi, namespace: str, deployment: str) -> list[str]:
    """The names of the Deployment's pods that are not terminating, sorted."""
    where = f"Deployment {namespace}/{deployment}"
    live = _api(api, "GET", object_path("Deployment", deployment, namespace), missing_ok=True)
    if live is None:
        raise PodLogError(
            f"nothing runs on kubernetes: no {where}; `kiln deploy VERSION` ships one"
        )
    labels = live["spec"]["selector"].get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    found = _api(
        api, "GET", object_path("Pod", None, namespace), query=[("labelSelector", selector)]
    )
    names = sorted(
        pod["metadata"]["name"]
        for pod in (found or {}).get("items", [])
        if not pod["metadata"].get("deletionTimestamp")
    )
    if not names:
        raise PodLogError(f"{where} has no pods (scaled to zero, or none could start)")
    return names


def pod_log_lines(api: KubeApi, namespace: str, pod: str, request: LogRequest) -> Iterator[str]:
    """The lines of one pod's server container log, as the API server sends them."""
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log"
    query = [("container", CONTAINER_NAME)]
    if request.tail is not None:
        query.append(("tailLines", str(request.tail)))
    if request.follow:
        query.append(("follow", "true"))
    response = _open(api, path, query, request.follow)
    try:
        pending = b""
        for chunk in response.stream(CHUNK, decode_content=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
            while len(pending) > MAX_LINE:
                yield pending[:MAX_LINE].decode(errors="replace")
                pending = pending[MAX_LINE:]
        if pending:
            yield pending.decode(errors="replace")
    except (OSError, urllib3.exceptions.HTTPError) as err:
        raise PodLogError(f"reading the log of pod {namespace}/{pod}: {_reason(err)}") from err
    finally:
        response.release_conn()


def stream_logs(
    api: KubeApi,
    namespace: str,
    deployment: str,
    request: LogRequest,
    write: Callable[[str], None],
) -> list[str]:
    """Every pod's log through `write` (one line at a time, prefixed with the pod's name
    when there are several); following, one reader per pod. Returns the pods read."""
    pods = deployment_pods(api, namespace, deployment)
    if request.follow and len(pods) > MAX_STREAMS:
        log.warning("following %d of %d pods", MAX_STREAMS, len(pods))
        pods = pods[:MAX_STREAMS]
    prefix = len(pods) > 1
    lock = threading.Lock()

    def read(pod: str) -> None:
        for line in pod_log_lines(api, namespace, pod, request):
            with lock:
                write(f"[{pod}] {line}" if prefix else line)

    if not request.follow:
        for pod in pods:
            read(pod)
        return pods
    errors: list[BaseException] = []

    def follow(pod: str) -> None:
        try:
            read(pod)
        except BaseException as err:  # handed to the caller's thread
            errors.append(err)

    readers = [threading.Thread(target=follow, args=(p,), daemon=True) for p in pods]
    for reader in readers:
        reader.start()
    for reader in readers:
        while reader.is_alive():  # short joins: Ctrl-C reaches the main thread
            reader.join(0.2)
    if errors:
        raise errors[0]
    return pods


def _api(api: KubeApi, method: str, path: str, **kw: Any) -> dict[str, Any] | None:
    from kiln.rollout.kubernetes.api import ApiStatusError, ApiUnreachable

    try:
        return api.call(method, path, **kw)
    except ApiUnreachable as err:
        raise PodLogError(_unreachable(api, err)) from err
    except ApiStatusError as err:
        raise PodLogError(_refused(err.status, status_message(err.body), path)) from err


def _open(
    api: KubeApi, path: str, query: list[tuple[str, str]], follow: bool
) -> urllib3.BaseHTTPResponse:
    """The log response, headers read, body not: a follow stream has no read timeout."""
    method, url, headers, _body, _post = api.api_client.param_serialize(
        method="GET",
        resource_path=path,
        query_params=query,
        header_params={"Accept": "text/plain, */*"},
        auth_settings=["BearerToken"],
    )
    timeout = (api.request_timeout, None if follow else api.request_timeout)
    try:
        answer = api.api_client.call_api(
            method, url, header_params=headers, _request_timeout=timeout
        )
    except (OSError, urllib3.exceptions.HTTPError) as err:
        raise PodLogError(_unreachable(api, err)) from err
    response = answer.response
    if answer.status >= 400:
        body = response.read(ERROR_BODY, decode_content=True)
        response.release_conn()
        raise PodLogError(_refused(answer.status, status_message(body), path))
    return response


def _refused(status: int, message: str, path: str) -> str:
    if status in (401, 403):
        return (
            f"the API server refused kiln ({status}): {message}; the account needs get and "
            "list on deployments and pods, and get on pods/log, in the namespace"
        )
    return f"GET {path}: {status} {message}"


def _unreachable(api: KubeApi, err: BaseException) -> str:
    return (
        f"cannot reach the Kubernetes API server at {api.host} ({_reason(err)}); "
        "check KUBECONFIG or KILN_K8S_CONTEXT"
    )


def _reason(err: BaseException) -> str:
    text = str(err)
    for known in ("Connection refused", "timed out", "Name or service not known"):
        if known in text:
            return known.lower()
    return f"{type(err).__name__}: {text[:200]}"
